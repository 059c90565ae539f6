"""Text prompts: CLIP loading (offline, safe), mask crops, selection and index mapping."""

from __future__ import annotations

import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import open_clip  # the 'test' extra installs it
import pytest
import torch

from fastsam.errors import FastSAMError, UnsafeCheckpointError
from fastsam.ops.masks import MaskCrops
from fastsam.results import Segments
from fastsam.text import BACKGROUND, ClipScorer, get_scorer, mask_crops, select_by_text

TINY = 2  # index of the tiny mask, between eligible ones
TEXTS = ["a red square", "a green circle", "a long blue bar"]


def _scene() -> tuple[np.ndarray, Segments]:
    """A 96x128 RGB image with six coloured shapes plus one tiny (36 px) mask at index 2."""
    h, w = 96, 128
    rng = np.random.default_rng(0)
    img = rng.integers(60, 90, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    shapes = [
        ((yy >= 10) & (yy < 40) & (xx >= 8) & (xx < 38), (230, 20, 20)),  # red square
        ((yy - 60) ** 2 + (xx - 30) ** 2 < 15**2, (20, 220, 40)),  # green disc
        ((yy >= 80) & (yy < 86) & (xx >= 100) & (xx < 106), (255, 0, 0)),  # tiny, reddest of all
        ((yy >= 50) & (yy < 58) & (xx >= 50) & (xx < 124), (30, 40, 230)),  # long blue bar
        (((yy - 25) / 12.0) ** 2 + ((xx - 80) / 20.0) ** 2 < 1, (240, 230, 30)),  # yellow ellipse
        ((yy >= 62) & (yy < 92) & (xx >= 60) & (xx - 60 < yy - 62), (200, 200, 200)),  # grey triangle
        (((yy - 75) ** 2 + (xx - 112) ** 2 < 12**2) & ((yy - 75) ** 2 + (xx - 112) ** 2 >= 6**2), (150, 60, 200)),
    ]
    regions, crops, boxes = [], [], []
    for m, colour in shapes:
        img[m] = colour
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        # regions with a margin of False pixels, so crops are not already tight
        r0, r1 = max(rows[0] - 3, 0), min(rows[-1] + 4, h)
        c0, c1 = max(cols[0] - 2, 0), min(cols[-1] + 5, w)
        regions.append((r0, r1, c0, c1))
        crops.append(m[r0:r1, c0:c1].copy())
        boxes.append((c0, r0, c1, r1))
    n = len(shapes)
    seg = Segments.from_crops(
        (h, w),
        np.array(boxes, float),
        np.linspace(0.9, 0.3, n),
        MaskCrops(np.array(regions), crops, np.ones(n, np.float32)),
    )
    assert seg.areas[TINY] <= 100 and (np.delete(seg.areas, TINY) > 100).all()
    return img, seg


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, Segments]:
    return _scene()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random-weight ViT-B-32 and the same weights in every supported file format."""
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    sd = model.state_dict()
    torch.save(sd, out / "sd.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, out / "wrapped.pt")
    save_file({k: v.contiguous().clone() for k, v in sd.items()}, str(out / "clip.safetensors"))
    # OpenAI's release is a TorchScript archive of a QuickGELU model: the loader must notice that
    quick = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    quick.load_state_dict(sd)
    with torch.no_grad():
        traced = torch.jit.trace_module(quick, {"encode_image": torch.zeros(1, 3, 224, 224)}, check_trace=False)
    traced.save(str(out / "scripted.pt"))
    return {"model": model, "quick": quick, "dir": out}


def _reference_similarity(model: torch.nn.Module, crops: list[np.ndarray], texts: list[str]) -> np.ndarray:
    """Independent (T, N) similarity: open_clip's own eval transform and the model's encoders."""
    from PIL import Image

    tf = open_clip.image_transform(model.visual.image_size, is_train=False)
    with torch.no_grad():
        img = model.encode_image(torch.stack([tf(Image.fromarray(c)) for c in crops]))
        txt = model.encode_text(open_clip.get_tokenizer("ViT-B-32")(texts))
    img = torch.nn.functional.normalize(img, dim=-1)
    txt = torch.nn.functional.normalize(txt, dim=-1)
    return (txt @ img.T).numpy()


class RednessScorer:
    """Fake scorer: similarity = mean redness (R - (G + B) / 2) of each crop, the same for every text."""

    def __init__(self) -> None:
        self.calls = 0

    def similarity(self, crops, texts):
        self.calls += 1
        red = [float((c[..., 0].astype(float) - c[..., 1:].mean(-1)).max()) for c in crops]
        return np.tile(np.array(red, dtype=np.float32), (len(texts), 1))


def test_mask_crops_are_square_with_neutral_background(scene) -> None:
    img, seg = scene
    assert BACKGROUND == (123, 117, 104)
    normalised = (np.array(BACKGROUND) / 255 - np.array([0.48145466, 0.4578275, 0.40821073])) / np.array(
        [0.26862954, 0.26130258, 0.27577711]
    )
    assert np.abs(normalised).max() < 0.01
    crops = mask_crops(seg, img, range(len(seg)))
    for k, crop in enumerate(crops):
        x, y, bw, bh = seg.mask_boxes()[k]
        side = max(bw, bh)
        assert crop.dtype == np.uint8 and crop.shape == (side, side, 3)
        dy, dx = (side - bh) // 2, (side - bw) // 2
        full = seg.mask(k)[y : y + bh, x : x + bw]
        inside = np.zeros((side, side), bool)
        inside[dy : dy + bh, dx : dx + bw] = full
        assert (crop[~inside] == np.array(BACKGROUND, np.uint8)).all()
        assert np.array_equal(crop[dy : dy + bh, dx : dx + bw][full], img[y : y + bh, x : x + bw][full])
    assert crops[3].shape == (74, 74, 3)  # the 8x74 bar: padded, not cut


def test_index_mapping_skips_tiny_mask(scene) -> None:
    img, seg = scene
    scorer = RednessScorer()
    # the tiny mask is the reddest: only skipping it (and mapping back correctly) gives mask 0
    assert [r.tolist() for r in select_by_text(seg, img, ["red", "x"], scorer)] == [[0], [0]]
    assert scorer.calls == 1  # all texts share one batch
    res = select_by_text(seg, img, "red", scorer, min_area=0)
    assert res[0].tolist() == [TINY] and res[0].dtype == np.int64
    # threshold mode: redness red 210 > yellow 110 > purple ring 20 > background fill 12.5 (the rest)
    res = select_by_text(seg, img, "red", scorer, threshold=19.0)[0]
    assert res.tolist() == [0, 4, 6]
    assert select_by_text(seg, img, "red", scorer, threshold=19.0, min_area=0)[0].tolist() == [TINY, 0, 4, 6]
    assert select_by_text(seg, img, "red", scorer, threshold=1e9)[0].size == 0


def test_no_eligible_masks_and_bad_input(scene) -> None:
    img, seg = scene
    scorer = RednessScorer()
    res = select_by_text(seg, img, ["a", "b"], scorer, min_area=10**6)
    assert len(res) == 2 and all(r.size == 0 and r.dtype == np.int64 for r in res) and scorer.calls == 0
    assert select_by_text(Segments.empty((96, 128)), img, "a", scorer)[0].size == 0
    for bad in ([], "", "   ", ["ok", ""]):
        with pytest.raises(FastSAMError):
            select_by_text(seg, img, bad, scorer)
    with pytest.raises(FastSAMError, match="masks are for"):
        select_by_text(seg, img[:50], "a", scorer)
    with pytest.raises(FastSAMError):
        select_by_text(seg, img[..., 0], "a", scorer)


@pytest.mark.slow
def test_similarity_and_selection_match_independent_clip(clip, scene) -> None:
    img, seg = scene
    scorer = get_scorer(clip["dir"] / "sd.pt")
    assert scorer.image_size == (224, 224)
    eligible = np.flatnonzero(seg.areas > 100)
    assert TINY not in eligible
    crops = mask_crops(seg, img, eligible)
    ref = _reference_similarity(clip["model"], crops, TEXTS)
    sims = scorer.similarity(crops, TEXTS)
    assert sims.shape == (len(TEXTS), len(eligible))
    np.testing.assert_allclose(sims, ref, atol=1e-4)

    calls = []

    class Spy:
        def similarity(self, crops, texts):
            calls.append((len(crops), len(texts)))
            return scorer.similarity(crops, texts)

    top = select_by_text(seg, img, TEXTS, Spy())
    assert calls == [(len(eligible), len(TEXTS))]  # one image batch for all texts
    assert len(top) == len(TEXTS)
    for t, r in enumerate(top):
        assert r.dtype == np.int64 and r.tolist() == [int(eligible[np.argmax(ref[t])])]

    thr = float(np.median(ref[1]))
    got = select_by_text(seg, img, TEXTS[1], scorer, threshold=thr)[0]
    keep = np.flatnonzero(ref[1] >= thr)
    assert got.tolist() == eligible[keep[np.argsort(-ref[1][keep])]].tolist()
    assert len(got) == len(eligible) // 2 and TINY not in got.tolist()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wrapped.pt", "clip.safetensors", "scripted.pt"])
def test_weight_formats_load_the_same_model(clip, scene, name) -> None:
    img, seg = scene
    scorer = ClipScorer(clip["dir"] / name)
    ref = clip["model"].state_dict()
    got = scorer.model.state_dict()
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
    crops = mask_crops(seg, img, [3, 4])
    quick = any(type(m).__name__ == "QuickGELU" for m in scorer.model.modules())
    assert quick == (name == "scripted.pt")
    model = clip["quick" if quick else "model"]
    np.testing.assert_allclose(scorer.similarity(crops, TEXTS), _reference_similarity(model, crops, TEXTS), atol=1e-4)


@pytest.mark.slow
def test_get_scorer_loads_once(clip, monkeypatch) -> None:
    path = clip["dir"] / "sd.pt"
    first = get_scorer(path)
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: pytest.fail("CLIP was built twice"))
    monkeypatch.chdir(clip["dir"])
    assert get_scorer("sd.pt") is first and get_scorer(str(path)) is first


@pytest.mark.slow
def test_wrong_architecture_is_refused(clip) -> None:
    with pytest.raises(FastSAMError, match="does not fit CLIP"):
        ClipScorer(clip["dir"] / "sd.pt", model_name="ViT-B-16")


def test_missing_weights_and_missing_extra(tmp_path, monkeypatch) -> None:
    missing = tmp_path / "nowhere" / "ViT-B-32.pt"
    with pytest.raises(FastSAMError, match="--clip-weights") as err:
        ClipScorer(missing)
    assert str(missing) in str(err.value)
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(FastSAMError, match=r"pip install 'fastsam\[text\]'"):
        ClipScorer(missing)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Module:
    """Pickled under the name of a scripted class, ``__torch__.model.CLIP`` (see below)."""


class _ScriptedPayload:
    """Looks like a scripted module (a ``__torch__`` class) whose state smuggles in a call."""

    def __init__(self, marker: Path) -> None:
        self.state = {"weight": _Payload(marker)}

    def __reduce__(self):
        return (_Module, (), self.state)


def _scripted_pickle(payload: object) -> bytes:
    data = pickle.dumps(payload, protocol=2)
    fake = f"c{__name__}\n_Module\n".encode()
    assert data.count(fake) <= 1
    return data.replace(fake, b"c__torch__.model\nCLIP\n")


@pytest.mark.parametrize("kind", ["scripted", "scripted-state", "pickle", "torch-zip"])
def test_malicious_weights_are_refused(tmp_path, kind) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "ViT-B-32.pt"
    if kind.startswith("scripted"):
        payload = _Payload(marker) if kind == "scripted" else _ScriptedPayload(marker)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("evil/data.pkl", _scripted_pickle(payload))
            z.writestr("evil/code/__torch__/model.py", "import os\nos.system('touch pwned')\n")
            z.writestr("evil/version", "3\n")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save(_Payload(marker), path)
    with pytest.raises(UnsafeCheckpointError, match="refusing"):
        ClipScorer(path)
    assert not marker.exists()
