"""Tests of fastsam.io.images: load_image (paths, arrays, Pillow images) and iter_sources.

All images are made in tmp_path with Pillow/numpy; nothing is downloaded.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fastsam.errors import ImageError
from fastsam.io.images import iter_sources, load_image

RNG = np.random.default_rng(0)


def _rgb(h: int = 12, w: int = 17) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _jpeg_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _check(out: np.ndarray, shape: tuple[int, int]) -> None:
    assert out.dtype == np.uint8
    assert out.shape == (*shape, 3)
    assert out.flags["C_CONTIGUOUS"]


# --------------------------------------------------------------------------------------- files
def test_rgb_png_round_trip_exact(tmp_path):
    """An RGB PNG loads with exactly the saved pixels."""
    arr = _rgb()
    p = tmp_path / "a.png"
    Image.fromarray(arr).save(p)
    out = load_image(p)
    _check(out, arr.shape[:2])
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(load_image(str(p)), arr)  # str paths too


def test_decoded_by_content_not_extension(tmp_path):
    """A JPEG named .png is decoded as the JPEG it is (flat colour, close after compression)."""
    arr = np.zeros((16, 24, 3), np.uint8)
    arr[:] = (30, 140, 220)
    p = tmp_path / "really_a_jpeg.png"
    p.write_bytes(_jpeg_bytes(arr, quality=95))
    out = load_image(p)
    _check(out, (16, 24))
    assert np.abs(out.astype(int) - arr.astype(int)).max() <= 4


def test_grayscale_png_three_equal_channels(tmp_path):
    """Mode L -> the gray value on all three channels."""
    gray = RNG.integers(0, 256, size=(9, 13), dtype=np.uint8)
    p = tmp_path / "g.png"
    Image.fromarray(gray, mode="L").save(p)
    out = load_image(p)
    _check(out, gray.shape)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_png_alpha_dropped(tmp_path):
    """RGBA -> RGB values kept exactly, alpha ignored (not composited)."""
    rgba = RNG.integers(0, 256, size=(10, 11, 4), dtype=np.uint8)
    rgba[..., 3] = RNG.integers(0, 256, size=(10, 11))
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(p)
    out = load_image(p)
    _check(out, (10, 11))
    np.testing.assert_array_equal(out, rgba[..., :3])


PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (12, 34, 56)]


def _palette_image(h: int = 8, w: int = 9) -> tuple[Image.Image, np.ndarray]:
    idx = (np.arange(h * w).reshape(h, w) % len(PALETTE)).astype(np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([v for rgb in PALETTE for v in rgb] + [0] * (768 - 3 * len(PALETTE)))
    return img, np.array(PALETTE, np.uint8)[idx]


@pytest.mark.parametrize("fmt", ["png", "gif"])
def test_palette_png_and_gif(tmp_path, fmt):
    """Palette images (P mode PNG, GIF) -> the palette's RGB colours."""
    img, expected = _palette_image()
    p = tmp_path / f"pal.{fmt}"
    img.save(p)
    out = load_image(p)
    _check(out, expected.shape[:2])
    np.testing.assert_array_equal(out, expected)


def test_palette_with_transparency(tmp_path):
    """A palette PNG with a transparent index still gives the palette colours."""
    img, expected = _palette_image()
    p = tmp_path / "pal_t.png"
    img.save(p, transparency=1)
    np.testing.assert_array_equal(load_image(p), expected)


def test_16bit_grayscale_png_keeps_top_byte(tmp_path):
    """16-bit gray (I;16) -> arr >> 8 replicated on three channels."""
    arr = RNG.integers(0, 65536, size=(7, 10), dtype=np.uint16)
    arr[0, 0], arr[0, 1] = 0, 65535
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    p = tmp_path / "g16.png"
    img.save(p)
    out = load_image(p)
    _check(out, arr.shape)
    expected = (arr >> 8).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], expected)
    assert out[0, 1, 0] == 255 and out[0, 0, 0] == 0


def test_cmyk_jpeg_close_to_original(tmp_path):
    """A CMYK JPEG is converted back to RGB close to the colour it was made from."""
    colour = (200, 60, 30)
    p = tmp_path / "cmyk.jpg"
    Image.new("RGB", (20, 14), colour).convert("CMYK").save(p, quality=95)
    with Image.open(p) as im:
        assert im.mode == "CMYK"
    out = load_image(p)
    _check(out, (14, 20))
    assert np.abs(out.astype(int) - np.array(colour)).max() <= 8


def test_one_bit_image(tmp_path):
    """Mode 1 -> 0 / 255 on all channels, at the right pixels."""
    bits = RNG.random((9, 12)) > 0.5
    img = Image.fromarray(bits)
    assert img.mode == "1"
    p = tmp_path / "bits.png"
    img.save(p)
    out = load_image(p)
    _check(out, bits.shape)
    expected = np.where(bits, 255, 0).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], expected)


def test_exif_orientation_applied(tmp_path):
    """Orientation=6 (rotate 90 deg CW on display): a W x H stored image loads as (W, H) and the
    red top-left quadrant of the stored image ends up top-right."""
    h, w = 40, 64
    arr = np.full((h, w, 3), 255, np.uint8)
    arr[: h // 2, : w // 2] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(p, quality=95, exif=exif)
    out = load_image(p)
    _check(out, (w, h))
    expected = np.rot90(arr, k=-1)  # clockwise
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 3
    red = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] < 60)
    assert red[: w // 2 - 3, h // 2 + 3 :].all()  # top-right quadrant red
    assert not red[:, : h // 2 - 3].any() and not red[w // 2 + 3 :].any()


# --------------------------------------------------------------------------------------- arrays
def test_array_inputs():
    """numpy arrays are taken as RGB: gray, (H,W,1), RGB unchanged, RGBA alpha dropped."""
    gray = RNG.integers(0, 256, size=(5, 6), dtype=np.uint8)
    rgb3 = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(load_image(gray), rgb3)
    np.testing.assert_array_equal(load_image(gray[:, :, None]), rgb3)
    rgb = _rgb(5, 6)
    out = load_image(rgb)
    np.testing.assert_array_equal(out, rgb)
    assert out.dtype == np.uint8
    rgba = RNG.integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
    out = load_image(rgba)
    assert out.shape == (5, 6, 3) and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, rgba[..., :3])


def test_array_uint16_and_float():
    """uint16 -> top byte (x >> 8); float in [0, 1] -> round(x * 255)."""
    a16 = RNG.integers(0, 65536, size=(4, 7, 3), dtype=np.uint16)
    np.testing.assert_array_equal(load_image(a16), (a16 >> 8).astype(np.uint8))
    f = RNG.random((4, 7, 3)).astype(np.float32)
    f[0, 0] = (0.0, 1.0, 0.5 / 255 + 0.3 / 255)
    out = load_image(f)
    np.testing.assert_array_equal(out, np.rint(f.astype(np.float64) * 255).astype(np.uint8))
    assert tuple(out[0, 0]) == (0, 255, 1)
    np.testing.assert_array_equal(load_image(f[..., 0].astype(np.float64))[..., 1], out[..., 0])


@pytest.mark.parametrize(
    "arr",
    [
        np.zeros((4, 5, 2), np.uint8),
        np.zeros((0, 5, 3), np.uint8),
        np.zeros((4, 5, 3), bool),
        np.full((4, 5, 3), np.nan, np.float32),
        np.zeros((2, 3, 4, 3), np.uint8),
    ],
    ids=["two-channels", "no-rows", "bool", "nan", "4d"],
)
def test_bad_arrays_raise(arr):
    """Bad shapes, bool dtype and NaN floats raise ImageError (a ValueError)."""
    with pytest.raises(ImageError):
        load_image(arr)
    with pytest.raises(ValueError):
        load_image(arr)


def test_pil_image_input():
    """Pillow images are accepted directly (RGB exact; LA -> gray on three channels)."""
    arr = _rgb(6, 8)
    np.testing.assert_array_equal(load_image(Image.fromarray(arr)), arr)
    la = np.stack([arr[..., 0], arr[..., 1]], axis=2)
    out = load_image(Image.fromarray(la, mode="LA"))
    np.testing.assert_array_equal(out, np.repeat(arr[..., :1], 3, axis=2))


def test_unsupported_source_type():
    """Something that is neither a path, an array nor an image raises ImageError."""
    with pytest.raises(ImageError, match="int"):
        load_image(42)


# --------------------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    """A missing file: the message names the path and says 'not found'."""
    p = tmp_path / "nope.png"
    with pytest.raises(ImageError) as ei:
        load_image(p)
    assert str(p) in str(ei.value) and "not found" in str(ei.value)


def _bad_files(tmp_path):
    good = _jpeg_bytes(_rgb(64, 64), quality=90)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "random.jpg").write_bytes(np.random.default_rng(1).bytes(4096))
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.png").write_text("this is not an image\n" * 20)
    (tmp_path / "adir.png").mkdir()
    return ["empty.png", "random.jpg", "truncated.jpg", "text.png", "adir.png"]


def test_unreadable_files_raise_with_path(tmp_path):
    """Directory, empty file, random bytes, truncated JPEG, text file -> ImageError naming the file."""
    for name in _bad_files(tmp_path):
        p = tmp_path / name
        with pytest.raises(ImageError) as ei:
            load_image(p)
        assert str(p) in str(ei.value), (name, str(ei.value))


# --------------------------------------------------------------------------------- iter_sources
def test_iter_sources_directory_sorted(tmp_path):
    """A directory yields its image files only, sorted, each loadable."""
    d = tmp_path / "imgs"
    d.mkdir()
    arrays = {"c.png": _rgb(4, 5), "a.bmp": _rgb(6, 3), "b.png": _rgb(2, 2)}
    for name, arr in arrays.items():
        Image.fromarray(arr).save(d / name)
    (d / "notes.txt").write_text("hello")
    pairs = list(iter_sources(d))
    assert [n for n, _ in pairs] == [str(d / n) for n in ("a.bmp", "b.png", "c.png")]
    for name, src in pairs:
        np.testing.assert_array_equal(load_image(src), arrays[name.rsplit("/", 1)[-1]])
    assert [n for n, _ in iter_sources(str(d))] == [n for n, _ in pairs]


def test_iter_sources_empty_directory(tmp_path):
    """A directory without images raises ImageError naming it."""
    d = tmp_path / "empty"
    d.mkdir()
    (d / "readme.txt").write_text("x")
    with pytest.raises(ImageError) as ei:
        list(iter_sources(d))
    assert str(d) in str(ei.value)


def test_iter_sources_mixed_list(tmp_path):
    """A list of a path and an array: the path is named by itself, the array 'image<i>'."""
    p = tmp_path / "one.png"
    Image.fromarray(_rgb(3, 3)).save(p)
    arr = _rgb(2, 2)
    pairs = list(iter_sources([p, arr]))
    assert [n for n, _ in pairs] == [str(p), "image1"]
    assert pairs[1][1] is arr
    np.testing.assert_array_equal(load_image(pairs[0][1]), load_image(p))
    single = list(iter_sources(arr))
    assert len(single) == 1 and single[0][0] == "image0"
