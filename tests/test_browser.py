"""The web page in a real browser: Debian's headless Chromium, driven by Playwright, against a uvicorn
server on a free loopback port (the app ``fastsam serve`` runs).

The model is the shipped demo model when this installation has one, else a random-weight n-scale
network. The assertions hold for both: the selection drawn by the page must be exactly the mask the
API answers for the prompts the page sent, it must cover the clicked pixel, and it must overlap the
clicked object. A screenshot is saved under tests/artifacts/.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from test_serve import ColourScorer, inside_point, png_bytes, random_model, scene

from fastsam import FastSAM, PredictConfig
from fastsam.errors import FastSAMError
from fastsam.formats import rle_decode
from fastsam.serve import create_app
from fastsam.serve.server import BackgroundServer

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
H, W = 480, 640

READ_ALPHA = """(id) => {
  const c = document.getElementById(id);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  const bytes = new Uint8Array(c.width * c.height);
  for (let i = 0; i < bytes.length; i++) bytes[i] = d[4 * i + 3] > 0 ? 1 : 0;
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return btoa(s);
}"""
READ_RGB = """() => {
  const c = document.getElementById("image");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let s = "";
  for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode(...d.subarray(i, i + 8192));
  return btoa(s);
}"""
SETTLED = """(n) => { const d = document.getElementById("stage").dataset;
  return d.pending === "0" && d.promptCount === String(n); }"""


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # a missing browser is a broken test setup, not a reason to skip
        pytest.fail("Debian's chromium is not installed (apt-get install -y chromium; .ci/run does this)")
    return path


@pytest.fixture(scope="module")
def model_and_config(tmp_path_factory):
    from fastsam.train.evaluate import default_imgsz
    from fastsam.weights import default_model_path

    try:
        path, which = default_model_path(), "shipped demo model"
    except FastSAMError:
        path, which = random_model(tmp_path_factory.mktemp("model") / "n.safetensors"), "random n model"
    model = FastSAM(path, cache_size=0)
    imgsz = default_imgsz(model) if which.startswith("shipped") else 640  # as fastsam serve: the training size
    print(f"browser test model: {which} ({path}), imgsz {imgsz}")
    return model, PredictConfig(imgsz=imgsz)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True)
        yield b
        b.close()


def alpha(page, canvas: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(page.evaluate(READ_ALPHA, canvas)), np.uint8).reshape(H, W).astype(bool)


def data(page, name: str) -> str:
    return page.get_attribute("#stage", f"data-{name}")


def settle(page, n_prompts: int) -> None:
    page.wait_for_function(SETTLED, arg=n_prompts, timeout=30_000)
    assert data(page, "error") == "", data(page, "error")


def api_selection(url: str, key: str, prompts: dict) -> dict:
    r = httpx.post(f"{url}/api/images/{key}/prompt", json=prompts, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def check_selection(page, url: str, key: str) -> tuple[np.ndarray, dict]:
    """The selection canvas equals the API's mask for the prompts the page sent; returns both."""
    prompts = json.loads(data(page, "prompts"))
    answer = api_selection(url, key, prompts)
    drawn = alpha(page, "selection")
    assert np.array_equal(drawn, rle_decode(answer["mask"]))
    assert data(page, "selected-count") == str(len(answer["indices"]))
    assert data(page, "selected-indices") == ",".join(map(str, answer["indices"]))
    return drawn, answer


def to_page(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of original-image pixel coordinates (the canvas may be scaled by CSS)."""
    box = page.locator("#prompts").bounding_box()
    return box["x"] + x * box["width"] / W, box["y"] + y * box["height"] / H


@pytest.mark.slow
def test_page_segments_and_selects_in_chromium(browser, model_and_config, tmp_path):
    model, cfg = model_and_config
    rgb, anns, masks = scene(seed=13, size=(H, W))
    image = tmp_path / "scene.png"
    image.write_bytes(png_bytes(rgb))
    # the object with the largest inscribed circle: a click well inside it
    import cv2

    depth = [cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 5).max() for m in masks]
    k = int(np.argmax(depth))
    obj = masks[k]
    cx, cy = inside_point(obj)
    ARTIFACTS.mkdir(exist_ok=True)

    app = create_app(model, clip_scorer=ColourScorer(), config=cfg)
    with BackgroundServer(app) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        script_errors: list[str] = []
        page.on("pageerror", lambda e: script_errors.append(str(e)))
        page.goto(url + "/")
        assert page.title() == "fastsam"
        page.wait_for_function("() => document.getElementById('stage').dataset.textPrompts === 'true'")

        # open the image: everything mode, overlay of all masks
        page.set_input_files("#file", str(image))
        page.wait_for_function("() => document.getElementById('stage').dataset.state === 'ready'", timeout=120_000)
        key = data(page, "image-id")
        everything = httpx.get(f"{url}/api/images/{key}", timeout=30).json()
        assert int(data(page, "mask-count")) == everything["count"] == len(everything["records"]) > 0
        assert alpha(page, "everything").any() and not alpha(page, "selection").any()
        shown = np.frombuffer(base64.b64decode(page.evaluate(READ_RGB)), np.uint8).reshape(H, W, 4)[..., :3]
        assert np.abs(shown.astype(int) - rgb).mean() < 1.0  # the page shows the uploaded pixels

        # left click inside the object: a foreground point; its selection appears over the object
        page.mouse.click(*to_page(page, cx + 0.5, cy + 0.5))
        settle(page, 1)
        prompts = json.loads(data(page, "prompts"))
        assert prompts["labels"] == [1]
        px, py = (int(v) for v in np.floor(prompts["points"][0]))
        assert abs(px - cx) <= 1 and abs(py - cy) <= 1
        drawn, answer = check_selection(page, url, key)
        assert drawn[py, px], "the selected mask does not cover the clicked pixel"
        assert (drawn & obj).sum() > 0, "the selected mask does not overlap the clicked object"
        assert len(answer["indices"]) >= 1
        first = drawn
        page.screenshot(path=str(ARTIFACTS / "browser_point.png"))
        inter = (drawn & obj).sum()
        print(
            f"screenshot: {ARTIFACTS / 'browser_point.png'}; selection covers {inter / obj.sum():.0%} of the "
            f"object, IoU {inter / (drawn | obj).sum():.2f}"
        )

        # right click far away from the object: a background point
        far = np.argwhere(~masks.any(0))
        fy, fx = far[np.argmax(np.hypot(far[:, 0] - cy, far[:, 1] - cx))]
        page.mouse.click(*to_page(page, fx + 0.5, fy + 0.5), button="right")
        settle(page, 2)
        assert json.loads(data(page, "prompts"))["labels"] == [1, 0]
        check_selection(page, url, key)

        # undo: back to the single point; clear: nothing selected
        page.click("#undo")
        settle(page, 1)
        assert np.array_equal(check_selection(page, url, key)[0], first)
        page.click("#clear")
        settle(page, 0)
        assert not alpha(page, "selection").any() and data(page, "selected-count") == "0"

        # drag a box around the object
        x, y, w, h = anns[k]["bbox"]
        page.mouse.move(*to_page(page, x, y))
        page.mouse.down()
        page.mouse.move(*to_page(page, x + w, y + h), steps=6)
        page.mouse.up()
        settle(page, 1)
        box = json.loads(data(page, "prompts"))["boxes"][0]
        assert np.allclose(box, [x, y, x + w, y + h], atol=1.5)
        drawn, answer = check_selection(page, url, key)
        assert answer["by_prompt"]["boxes"][0] >= 0 and (drawn & obj).sum() > 0

        # downloads: the selected records (fastsam segment format) and the mask as PNG
        with page.expect_download() as dl:
            page.click("#download-json")
        assert json.loads(Path(dl.value.path()).read_text()) == answer["records"]
        assert dl.value.suggested_filename == "scene-masks.json"
        with page.expect_download() as dl:
            page.click("#download-png")
        png = np.asarray(Image.open(dl.value.path()).convert("L")) > 127
        assert np.array_equal(png, rle_decode(answer["mask"]))

        # a text prompt (the injected colour scorer stands in for CLIP)
        page.click("#clear")
        settle(page, 0)
        page.fill("#text", anns[k]["caption"])
        page.press("#text", "Enter")
        settle(page, 1)
        assert json.loads(data(page, "prompts"))["texts"] == [anns[k]["caption"]]
        drawn, answer = check_selection(page, url, key)
        assert len(answer["by_prompt"]["texts"][0]) == 1 and drawn.any()

        # dropping the image on the page opens it too (same pixels: the cached result, same id)
        drop = page.evaluate_handle(
            """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
            return dt; }""",
            base64.b64encode(image.read_bytes()).decode(),
        )
        page.dispatch_event("#stage", "drop", {"dataTransfer": drop})
        page.wait_for_function("() => document.getElementById('stage').dataset.state === 'ready'")
        assert data(page, "image-id") == key and data(page, "prompt-count") == "0"
        assert "cached" in page.inner_text("#status")

        # a non-image upload is reported on the page
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"not an image at all")
        page.set_input_files("#file", str(bad))
        page.wait_for_function("() => document.getElementById('stage').dataset.state === 'error'")
        assert "upload is not a readable image" in page.inner_text("#status")
        page.screenshot(path=str(ARTIFACTS / "browser_error.png"))
        page.close()
    assert script_errors == []
