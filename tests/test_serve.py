"""HTTP API of ``fastsam serve``: uploads, everything mode, prompts, limits, errors, cache, concurrency.

Most tests use a predictor that returns the ground-truth masks of a synthetic scene (plus one mask
grouping all objects, so that masks nest as in a real everything-mode result): answers can then be
checked against the scene itself and against ``fastsam.prompts`` called directly.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fastsam import PredictConfig, Segments, select, select_by_boxes, select_by_points
from fastsam.data.synth import PALETTE, render_scene
from fastsam.errors import FastSAMError
from fastsam.formats import rle_decode
from fastsam.serve import create_app
from fastsam.serve.server import BackgroundServer
from fastsam.serve.state import ImageEntry, ResultCache, image_id
from fastsam.text import BACKGROUND, select_by_text

SIZE = (240, 320)  # (H, W)


# -- helpers shared with test_browser.py ---------------------------------------------------------------
def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def scene(seed: int = 4, size: tuple[int, int] = SIZE) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Synthetic image, its annotations and their (K, H, W) bool masks (visible parts, disjoint)."""
    rgb, anns = render_scene(np.random.default_rng(seed), size)
    return rgb, anns, np.stack([rle_decode(a["segmentation"]) for a in anns])


def inside_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask pixel farthest from its border (a safe place to click)."""
    import cv2

    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def random_model(path: Path) -> Path:
    """A random-weight n-scale network saved as fastsam safetensors (deterministic)."""
    import torch

    from fastsam.io.checkpoint import save_safetensors
    from fastsam.nn.model import build_model

    torch.manual_seed(0)
    m = build_model("n")
    save_safetensors(m.state_dict(), m.config, path)
    return path


class ColourScorer:
    """A stand-in for CLIP (the ``TextScorer`` protocol of fastsam.text): the similarity of a crop and
    a text is minus the distance between the crop's mean object colour and the palette colour the
    text names ("a red star" -> red), scaled to [-1, 0]."""

    def similarity(self, crops, texts):
        bg = np.array(BACKGROUND)
        means = []
        for c in crops:
            px = c.reshape(-1, 3).astype(np.float64)
            obj = px[np.any(px != bg, axis=1)]
            means.append(obj.mean(0) if len(obj) else bg.astype(np.float64))
        out = np.zeros((len(texts), len(crops)), dtype=np.float32)
        for t, text in enumerate(texts):
            names = [w for w in text.lower().split() if w in PALETTE]
            target = np.array(PALETTE[names[0]] if names else (0, 0, 0), dtype=np.float64)
            out[t] = [-np.linalg.norm(m - target) / 442.0 for m in means]
        return out


class FakePredictor:
    """Returns fixed Segments for the image it was made for; counts calls and concurrent calls."""

    def __init__(self, rgb: np.ndarray, segments: Segments, delay: float = 0.0) -> None:
        self.rgb, self.segments, self.delay = rgb, segments, delay
        self.calls = 0
        self.active = self.max_active = 0
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()

    def segment(self, image, config=None):
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                assert self.gate.wait(10)
            time.sleep(self.delay)
            if np.array_equal(image, self.rgb):
                return self.segments
            return Segments.from_masks(
                np.zeros((1, *image.shape[:2]), bool) | (image[..., 0] > 128)[None], np.array([0.5])
            )
        finally:
            with self._lock:
                self.active -= 1


def scene_segments(masks: np.ndarray) -> Segments:
    """The objects (scores descending in annotation order) plus, last, one mask of all objects together."""
    everything = np.concatenate([masks, masks.any(0, keepdims=True)])
    return Segments.from_masks(everything, np.linspace(0.9, 0.4, len(everything)))


# -- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world():
    rgb, anns, masks = scene()
    return {"rgb": rgb, "anns": anns, "masks": masks, "segments": scene_segments(masks), "png": png_bytes(rgb)}


@pytest.fixture()
def predictor(world):
    return FakePredictor(world["rgb"], world["segments"])


@pytest.fixture()
def client(predictor):
    app = create_app(predictor, clip_scorer=ColourScorer(), max_body_bytes=2_000_000, max_pixels=200_000)
    with TestClient(app) as c:
        yield c


@pytest.fixture()
def uploaded(client, world):
    r = client.post("/api/images", content=world["png"], headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def prompt(client, key: str, body: dict) -> httpx.Response:
    return client.post(f"/api/images/{key}/prompt", json=body)


def error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}
    return body["error"]


# -- uploads and everything mode -----------------------------------------------------------------------
def test_upload_returns_content_id_and_everything_records(client, predictor, world):
    r = client.post("/api/images", content=world["png"], headers={"content-type": "image/png"})
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == image_id(world["rgb"]) and len(body["id"]) == 32
    assert (body["width"], body["height"], body["count"]) == (320, 240, len(world["segments"]))
    assert body["cached"] is False and predictor.calls == 1
    assert body["records"] == world["segments"].to_records()
    assert r.headers["server-timing"].startswith("app;dur=")
    # the same pixels again, now as multipart (a browser form): served from the cache, no network run
    r2 = client.post("/api/images", files={"file": ("../../scene.png", world["png"], "image/png")})
    assert r2.status_code == 200 and r2.json()["cached"] is True and r2.json()["id"] == body["id"]
    assert predictor.calls == 1
    # and by id, with or without the records
    r3 = client.get(f"/api/images/{body['id']}")
    assert r3.json()["records"] == body["records"] and r3.json()["cached"] is True
    assert "records" not in client.get(f"/api/images/{body['id']}?records=false").json()


def test_same_pixels_in_another_format_share_the_id(client, predictor, world):
    buf = io.BytesIO()
    Image.fromarray(world["rgb"]).save(buf, format="BMP")
    a = client.post("/api/images", content=world["png"]).json()
    b = client.post("/api/images", content=buf.getvalue(), headers={"content-type": "image/bmp"}).json()
    assert a["id"] == b["id"] and b["cached"] is True and predictor.calls == 1


@pytest.mark.slow
def test_upload_with_a_real_network_matches_the_predictor(tmp_path):
    from fastsam import FastSAM

    model = FastSAM(random_model(tmp_path / "n.safetensors"), cache_size=0)
    rgb, _, _ = scene(seed=5, size=(96, 128))
    cfg = PredictConfig(imgsz=128, conf=0.4)
    with TestClient(create_app(model, config=cfg)) as c:
        body = c.post("/api/images", content=png_bytes(rgb)).json()
    expected = model.segment(rgb, cfg)
    assert body["count"] == len(expected) > 0
    assert body["records"] == expected.to_records()


# -- prompts -------------------------------------------------------------------------------------------
def test_point_prompt_selects_the_object_and_its_group(client, uploaded, world):
    segs, masks = world["segments"], world["masks"]
    k = int(np.argmax([m.sum() for m in masks]))
    x, y = inside_point(masks[k])
    r = prompt(client, uploaded, {"points": [[x + 0.5, y + 0.5]]})
    assert r.status_code == 200, r.text
    body = r.json()
    group = len(segs) - 1
    assert body["indices"] == [k, group] == body["by_prompt"]["points"]  # the original's merge rule
    mask = rle_decode(body["mask"])
    assert np.array_equal(mask, masks.any(0)) and body["mask_area"] == int(masks.any(0).sum())
    all_records = segs.to_records()
    assert body["records"] == [all_records[k], all_records[group]]
    assert float(r.headers["server-timing"].split("dur=")[1]) > 0


def test_background_point_cuts_a_mask_out(client, uploaded, world):
    segs, masks = world["segments"], world["masks"]
    a, b = np.argsort([-m.sum() for m in masks])[:2]
    pa, pb = inside_point(masks[a]), inside_point(masks[b])
    body = prompt(client, uploaded, {"points": [pa, pb], "labels": [1, 0]}).json()
    # the group mask holds both points; the last one (background) decides it, so only object a stays
    assert body["indices"] == [int(a)]
    assert np.array_equal(rle_decode(body["mask"]), masks[a])
    direct = select_by_points(segs, [pa, pb], [1, 0])
    assert body["indices"] == direct.indices.tolist()
    individual = prompt(client, uploaded, {"points": [pa, pb], "labels": [1, 0], "point_mode": "individual"}).json()
    assert individual["indices"] == select_by_points(segs, [pa, pb], [1, 0], mode="individual").indices.tolist()


def test_box_prompt_selects_the_best_fitting_mask(client, uploaded, world):
    anns, _masks = world["anns"], world["masks"]
    fill = [a["area"] / (a["bbox"][2] * a["bbox"][3]) if a["area"] > 300 else 0 for a in anns]
    k = int(np.argmax(fill))
    assert fill[k] > 0.6  # so no other mask can fit this box better
    x, y, w, h = anns[k]["bbox"]
    box = [x, y, x + w, y + h]
    body = prompt(client, uploaded, {"boxes": [box, [0, 0, 2, 2]]}).json()
    expected = select_by_boxes(world["segments"], [box, [0, 0, 2, 2]]).tolist()
    assert body["by_prompt"]["boxes"] == expected and expected[0] == k
    assert np.array_equal(rle_decode(body["mask"]), world["segments"].masks[sorted(set(expected) - {-1})].any(0))


def test_text_prompt_uses_the_injected_scorer(client, uploaded, world):
    anns = world["anns"]
    colours = [a["color"] for a in anns]
    k = next(i for i, a in enumerate(anns) if colours.count(a["color"]) == 1 and a["area"] > 500)
    text = f"a {anns[k]['color']} thing"
    body = prompt(client, uploaded, {"texts": [text]}).json()
    assert body["by_prompt"]["texts"] == [[k]] and body["indices"] == [k]
    direct = select_by_text(world["segments"], world["rgb"], [text], ColourScorer())
    assert [d.tolist() for d in direct] == [[k]]
    # a threshold low enough selects every candidate, most similar first
    many = prompt(client, uploaded, {"texts": [text], "text_threshold": -1.0}).json()
    assert many["by_prompt"]["texts"][0][0] == k and len(many["indices"]) > 1


def test_combined_prompts_are_the_union_of_select(client, uploaded, world):
    masks, segs = world["masks"], world["segments"]
    pts = [inside_point(masks[0]), inside_point(masks[1])]
    x, y, w, h = world["anns"][2]["bbox"]
    req = {"points": pts, "labels": [1, 0], "boxes": [[x, y, x + w, y + h]], "texts": ["a white polygon"]}
    body = prompt(client, uploaded, req).json()
    expected = select(
        segs,
        points=pts,
        labels=[1, 0],
        boxes=req["boxes"],
        texts=req["texts"],
        image=world["rgb"],
        scorer=ColourScorer(),
    )
    assert body["indices"] == expected.tolist()
    assert len(body["records"]) == len(expected)
    assert prompt(client, uploaded, {**req, "include_records": False}).json()["records"] is None


# -- errors: each says what is wrong -------------------------------------------------------------------
def truncated_png(rgb: np.ndarray) -> bytes:
    data = png_bytes(rgb)
    return data[: len(data) // 2]


def png_header(width: int, height: int) -> bytes:
    """A PNG with only a header (no pixel data) claiming width x height."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("body", "headers", "status", "text"),
    [
        (b"hello, not an image", {"content-type": "image/png"}, 415, "upload is not a readable image"),
        (b"", {"content-type": "image/png"}, 400, "empty upload"),
        ("truncated", {"content-type": "image/png"}, 415, "corrupt image"),
        (png_header(1000, 1000), {}, 413, "image is 1000x1000 = 1000000 pixels, over this server's limit of 200000"),
        (png_header(100_000, 100_000), {}, 413, "over this server's limit of 200000"),
        (
            b'--x\r\nContent-Disposition: form-data; name="other"\r\n\r\nabc\r\n--x--\r\n',
            {"content-type": "multipart/form-data; boundary=x"},
            400,
            "multipart upload has no file",
        ),
        (b"abc", {"content-type": "multipart/form-data"}, 400, "the Content-Type has no boundary"),
    ],
    ids=["text", "empty", "truncated", "1Mpx", "10Gpx-bomb", "multipart-no-file", "multipart-no-boundary"],
)
def test_bad_uploads(client, world, body, headers, status, text):
    data = truncated_png(world["rgb"]) if body == "truncated" else body
    assert text in error(client.post("/api/images", content=data, headers=headers), status)


def test_body_limit_by_header_and_by_counting(client, world):
    big = b"\0" * 2_000_001
    msg = "request body exceeds this server's limit of 2000000 bytes"
    assert error(client.post("/api/images", content=big), 413) == msg

    def chunks():  # no Content-Length: the server must count what arrives
        for _ in range(30):
            yield b"\0" * 100_000

    assert error(client.post("/api/images", content=chunks()), 413) == msg
    # a prompt has its own, smaller limit (max_prompt_bytes, 1 MiB by default), counted the same way
    assert (
        error(client.post("/api/images/0/prompt", content=chunks(), headers={"content-type": "application/json"}), 413)
        == "prompt body exceeds this server's limit of 1048576 bytes"
    )
    # the server is still fine
    assert client.post("/api/images", content=world["png"]).status_code == 200


def test_unknown_image_id(client):
    text = error(prompt(client, "0123456789abcdef0123456789abcdef", {"points": [[1, 1]]}), 404)
    assert text.startswith("unknown image id '0123456789abcdef0123456789abcdef': upload the image first")
    assert error(client.get("/api/images/nope"), 404).startswith("unknown image id 'nope'")


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"points": [[400, 10]]}, 422, "invalid prompt: point 0 (400, 10) lies outside the 320x240 image"),
        ({"points": [[-1, 10]]}, 422, "invalid prompt: point 0 (-1, 10) lies outside the 320x240 image"),
        ({"boxes": [[330, 10, 400, 100]]}, 422, "invalid prompt: box 0 (330, 10, 400, 100) lies outside the 320x240"),
        ({"boxes": [[50, 50, 40, 60]]}, 422, "invalid prompt: box 0 (50, 50, 40, 60) is empty"),
        ({"points": [[1, 2], [3, 4]], "labels": [1]}, 422, "invalid prompt: got 2 points but 1 labels"),
        ({"points": [[1, 2]], "labels": [2]}, 422, "invalid request: labels.0: Input should be 0 or 1"),
        ({"points": [[1, 2, 3]]}, 422, "invalid request: points.0: List should have at most 2 items"),
        ({"points": [["a", 2]]}, 422, "invalid request: points.0.0: Input should be a valid number"),
        ({"boxes": [[1, 2, 3]]}, 422, "invalid request: boxes.0: List should have at least 4 items"),
        ({"points": [[1, 1]] * 257}, 422, "invalid request: points: List should have at most 256 items"),
        ({"texts": [""]}, 422, "invalid request: texts.0: String should have at least 1 character"),
        ({"point": [[1, 1]]}, 422, "invalid request: point: Extra inputs are not permitted"),
        ({"points": [[1, 1]], "point_mode": "union"}, 422, "invalid request: point_mode: Input should be 'merge' or"),
        ({}, 422, "no prompt: give at least one of points, boxes or texts"),
        ({"labels": [1]}, 422, "labels given without points"),
        ([1, 2], 422, "request body must be a JSON object of prompts"),
    ],
)
def test_malformed_prompts(client, uploaded, body, status, text):
    got = error(prompt(client, uploaded, body), status)
    assert got.startswith(text), got


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b'{"points": [[1, 1]', "malformed JSON body: "),
        (b'{"points": [[NaN, 1]]}', "invalid request: points.0.0: Input should be a finite number"),
        (b"", "request body must be a JSON object of prompts"),
    ],
)
def test_unparseable_prompt_bodies(client, uploaded, raw, text):
    r = client.post(f"/api/images/{uploaded}/prompt", content=raw, headers={"content-type": "application/json"})
    assert error(r, 422).startswith(text)


def test_text_prompt_without_clip_is_501(predictor, world):
    with TestClient(create_app(predictor)) as c:
        key = c.post("/api/images", content=world["png"]).json()["id"]
        assert error(prompt(c, key, {"texts": ["a red star"]}), 501) == (
            "text prompts are unavailable: the server has no CLIP weights (start it with --clip-weights PATH)"
        )
        assert c.get("/api/info").json()["text_prompts"] is False
        assert prompt(c, key, {"points": [[1, 1]]}).status_code == 200  # other prompts still work


def test_failing_predictor_answers_json_and_the_server_goes_on(world):
    class Broken:
        def __init__(self):
            self.n = 0

        def segment(self, image, config=None):
            self.n += 1
            if self.n == 1:
                raise FastSAMError("image too small for this model")
            if self.n == 2:
                raise RuntimeError("boom")
            return Segments.from_masks(np.ones((1, *image.shape[:2]), bool), np.array([0.9]))

    with TestClient(create_app(Broken()), raise_server_exceptions=False) as c:
        assert (
            error(c.post("/api/images", content=world["png"]), 422)
            == "cannot segment this image: image too small for this model"
        )
        assert error(c.post("/api/images", content=world["png"]), 500) == "internal server error (RuntimeError)"
        r = c.post("/api/images", content=world["png"])
        assert r.status_code == 200 and r.json()["count"] == 1 and r.json()["cached"] is False


def test_bad_requests_leave_the_cached_result_intact(client, uploaded, world):
    good = {"points": [inside_point(world["masks"][0])]}
    first = prompt(client, uploaded, good).json()
    for body in ({"points": [[999, 1]]}, {"boxes": [[1]]}, {"texts": [""]}):
        assert prompt(client, uploaded, body).status_code == 422
    client.post("/api/images", content=b"junk")
    again = prompt(client, uploaded, good).json()
    assert again["indices"] == first["indices"] and again["mask"] == first["mask"]


def test_no_client_path_reaches_the_disk(client, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = client.post("/api/images", files={"file": (str(tmp_path / "evil.png"), world["png"], "image/png")})
    assert r.status_code == 200
    assert list(tmp_path.iterdir()) == []
    for path in ("/static/../app.py", "/static/%2e%2e%2fapp.py", "/static/state.py", "/static/..%2F..%2Fetc%2Fpasswd"):
        r = client.get(path)
        assert r.status_code == 404 and "error" in r.json()


# -- page, schema ----------------------------------------------------------------------------------------
def test_page_static_files_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    for needle in (
        'id="file"',
        'id="text"',
        'id="undo"',
        'id="clear"',
        'id="download-png"',
        'id="download-json"',
        'id="selection"',
        'data-selected-count="0"',
        "/static/app.js",
        "/static/style.css",
    ):
        assert needle in html
    assert "http://" not in html and "https://" not in html  # no CDN
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "rleCounts" in js.text and js.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/api/info",
        "/api/images",
        "/api/images/{image_id}",
        "/api/images/{image_id}/prompt",
    }
    content = schema["paths"]["/api/images"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*", "application/octet-stream"} <= set(content)
    req = schema["components"]["schemas"]["PromptRequest"]["properties"]
    assert {"points", "labels", "boxes", "texts", "point_mode", "text_threshold"} <= set(req)


# -- cache -------------------------------------------------------------------------------------------------
def test_cache_is_bounded_by_count(world):
    pred = FakePredictor(world["rgb"], world["segments"])
    images = [np.full((16, 16, 3), v, np.uint8) for v in (10, 200, 30)]
    with TestClient(create_app(pred, cache_items=2)) as c:
        ids = [c.post("/api/images", content=png_bytes(im)).json()["id"] for im in images]
        assert pred.calls == 3 and c.get("/api/info").json()["cached_images"] == 2
        assert error(prompt(c, ids[0], {"points": [[1, 1]]}), 404).startswith("unknown image id")
        assert prompt(c, ids[2], {"points": [[1, 1]]}).status_code == 200
        assert c.post("/api/images", content=png_bytes(images[0])).json()["cached"] is False
        assert pred.calls == 4


def test_result_cache_lru_by_bytes():
    def entry(v: int, side: int) -> ImageEntry:
        rgb = np.full((side, side, 3), v, np.uint8)
        return ImageEntry.build(image_id(rgb), rgb, Segments.empty((side, side)), 1.0)

    a, b, c = entry(1, 100), entry(2, 100), entry(3, 100)
    assert a.nbytes >= 30_000
    cache = ResultCache(max_items=10, max_bytes=int(2.5 * a.nbytes))
    cache.put(a)
    cache.put(b)
    assert cache.get(a.id) is a  # a is now the most recently used
    cache.put(c)
    assert cache.keys() == [a.id, c.id] and cache.nbytes == a.nbytes + c.nbytes
    huge = entry(4, 400)  # larger than the whole budget: kept alone, so its request can be answered
    cache.put(huge)
    assert cache.keys() == [huge.id] and len(cache) == 1


# -- concurrency -------------------------------------------------------------------------------------------
def test_model_runs_one_at_a_time_and_prompts_do_not_wait_for_it(world):
    pred = FakePredictor(world["rgb"], world["segments"])
    app = create_app(pred, max_pending=4)  # room for the three uploads that queue for the model
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=20) as http:
        key = http.post("/api/images", content=world["png"]).json()["id"]
        pred.gate = threading.Event()  # the next network runs block until the gate opens
        others = [png_bytes(np.full((20, 20, 3), v, np.uint8)) for v in (1, 2, 3)]
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(httpx.post, f"{url}/api/images", content=o, timeout=20) for o in others]
            deadline = time.monotonic() + 10
            while pred.calls < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            # a network run is in progress (and two uploads queue behind it): prompts are answered anyway
            t = time.perf_counter()
            r = http.post(f"/api/images/{key}/prompt", json={"points": [inside_point(world["masks"][0])]})
            assert r.status_code == 200 and time.perf_counter() - t < 5
            assert pred.active == 1
            pred.gate.set()
            assert all(f.result().status_code == 200 for f in futures)
        assert pred.max_active == 1 and pred.calls == 4


def test_concurrent_uploads_of_one_image_run_the_network_once(world):
    pred = FakePredictor(world["rgb"], world["segments"], delay=0.3)
    with BackgroundServer(create_app(pred, max_pending=4)) as url, ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(lambda _: httpx.post(f"{url}/api/images", content=world["png"], timeout=20).json(), range(4))
        )
    assert pred.calls == 1 and len({a["id"] for a in answers}) == 1
    assert sorted(a["cached"] for a in answers) == [False, True, True, True]


def test_load_50_prompts_from_8_clients(world):
    """Bounded load on loopback: every answer equals the selection computed directly."""
    segs, masks = world["segments"], world["masks"]
    app = create_app(FakePredictor(world["rgb"], segs), clip_scorer=ColourScorer())
    rng = np.random.default_rng(0)
    requests = []
    for i in range(50):
        kind = i % 3
        if kind == 0:
            pts = [[float(rng.uniform(0, 320)), float(rng.uniform(0, 240))] for _ in range(int(rng.integers(1, 4)))]
            requests.append({"points": pts, "labels": [int(v) for v in rng.integers(0, 2, len(pts))]})
        elif kind == 1:
            x, y, w, h = world["anns"][i % len(world["anns"])]["bbox"]
            requests.append({"boxes": [[x, y, x + w, y + h]]})
        else:
            requests.append({"points": [inside_point(masks[i % len(masks)])], "texts": ["a gray polygon"]})

    def expected(req: dict) -> list[int]:
        return select(
            segs,
            points=req.get("points"),
            labels=req.get("labels"),
            boxes=req.get("boxes"),
            texts=req.get("texts"),
            image=world["rgb"],
            scorer=ColourScorer(),
        ).tolist()

    with BackgroundServer(app) as url:
        key = httpx.post(f"{url}/api/images", content=world["png"], timeout=20).json()["id"]
        clients = [httpx.Client(base_url=url, timeout=30) for _ in range(8)]
        try:

            def send(i: int) -> tuple[int, int, list[int]]:
                r = clients[i % 8].post(f"/api/images/{key}/prompt", json=requests[i])
                return i, r.status_code, r.json()["indices"]

            t = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(send, range(50)))
            elapsed = time.perf_counter() - t
        finally:
            for c in clients:
                c.close()
    assert len(answers) == 50
    for i, status, indices in answers:
        assert status == 200 and indices == expected(requests[i]), i
    print(f"50 prompts from 8 clients in {elapsed:.2f} s")


def test_keep_alive_requests_are_not_delayed_by_nagle(world):
    """The listening socket says TCP, so asyncio sets TCP_NODELAY on each connection. Without it a
    response written in two parts waits for the client's delayed ACK: >= 40 ms per keep-alive request."""
    import socket

    from fastsam.serve.server import bind

    sock = bind("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    sock.close()
    app = create_app(FakePredictor(world["rgb"], world["segments"]))
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        times = []
        for _ in range(15):
            t = time.perf_counter()
            assert http.get("/api/info").status_code == 200
            times.append(time.perf_counter() - t)
    assert sorted(times)[len(times) // 2] < 0.035, times


# -- the command ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_serve_command_binds_loopback_by_default(tmp_path, monkeypatch):
    import uvicorn

    from fastsam.cli import main

    seen = {}

    def fake_run(self, sockets=None):
        seen["app"], seen["addr"] = self.config.app, sockets[0].getsockname()

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    model = random_model(tmp_path / "n.safetensors")
    assert main(["serve", "--model", str(model), "--port", "0", "--max-upload-mb", "1", "--conf", "0.3"]) == 0
    assert seen["addr"][0] == "127.0.0.1" and seen["addr"][1] > 0
    with TestClient(seen["app"]) as c:
        info = c.get("/api/info").json()
    assert info["max_body_bytes"] == 1024 * 1024 and info["max_pixels"] == 25_000_000
    # no --imgsz and no training size recorded in the file: 1024
    assert seen["app"].state.service.config == PredictConfig(imgsz=1024, conf=0.3)
    # a file that records its training size is served at that size unless --imgsz says otherwise
    from fastsam.io.checkpoint import load_model, save_safetensors

    net = load_model(model)
    trained = tmp_path / "trained.safetensors"
    save_safetensors(net.state_dict(), net.config, trained, provenance={"imgsz": 320})
    assert main(["serve", "--model", str(trained), "--port", "0"]) == 0
    assert seen["app"].state.service.config.imgsz == 320
    assert main(["serve", "--model", str(trained), "--port", "0", "--imgsz", "256"]) == 0
    assert seen["app"].state.service.config.imgsz == 256


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["serve", "--model", "/nonexistent/m.safetensors"], "m.safetensors"),
        (["serve"], "ships no demo segmentation model"),
        (["serve", "--model", "x", "--port", "70000"], "--port must be in 0..65535"),
    ],
)
def test_serve_command_errors(argv, text, capsys, monkeypatch):
    import fastsam.weights
    from fastsam.cli import main

    def missing():
        raise FastSAMError("this installation ships no demo segmentation model (fastsam-demo.safetensors is missing)")

    monkeypatch.setattr(fastsam.weights, "default_model_path", missing)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastsam: error: ") and text in err and "\n" not in err


@pytest.mark.slow
def test_serve_command_clip_weights(tmp_path, capsys, monkeypatch):
    import fastsam.weights
    from fastsam.cli import main
    from fastsam.serve.server import load_scorer

    model = random_model(tmp_path / "n.safetensors")
    assert main(["serve", "--model", str(model), "--clip-weights", str(tmp_path / "none.pt")]) == 2
    assert "CLIP weights not found" in capsys.readouterr().err

    def missing():
        raise FastSAMError("this installation ships no demo CLIP model")

    monkeypatch.setattr(fastsam.weights, "default_clip_path", missing)
    assert load_scorer(None, None, "cpu") is None  # then text prompts answer 501 (tested above)


def test_serve_command_reports_a_taken_port(tmp_path, capsys):
    import socket

    from fastsam.cli import main

    model = random_model(tmp_path / "n.safetensors")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["serve", "--model", str(model), "--port", str(port)]) == 2
    assert "in use" in capsys.readouterr().err


@pytest.mark.slow
def test_fastsam_serve_process_answers(tmp_path, world):
    """The real command in its own process: prints its address, serves the page and the API."""
    model = random_model(tmp_path / "n.safetensors")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastsam.cli", "serve", "--model", str(model), "--port", "0", "--imgsz", "320"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert line.startswith("fastsam: serving on http://127.0.0.1:"), line
        url = line.split()[3].rstrip("/")
        assert "<canvas" in httpx.get(url + "/", timeout=20).text
        body = httpx.post(url + "/api/images", content=world["png"], timeout=60).json()
        assert body["width"] == 320 and body["count"] == len(body["records"])
        sel = httpx.post(f"{url}/api/images/{body['id']}/prompt", json={"points": [[10, 10]]}, timeout=20)
        assert sel.status_code == 200 and set(sel.json()["indices"]) <= set(range(body["count"]))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        proc.stderr.close()
