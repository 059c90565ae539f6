"""Drop-in for ultralytics' FastSAM API: prompts in the call, ultralytics-shaped results.

Parity: the same checkpoint, image and prompts through ``ultralytics.FastSAM(...)(..., bboxes=...)``
(in its own process, tests/reference/ultra_prompts.py) and through fastsam give the same selected
masks in the same order, the same boxes and scores, and the same dtypes and shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REFERENCE, run_script
from PIL import Image

from fastsam import FastSAM, FastSAMError, Segments
from fastsam.compat import FastSAM as UltraFastSAM
from fastsam.compat import Results
from fastsam.prompts import select_ultralytics

IMGSZ = 640
# prompts on bus.jpg (810x1080), in original pixels
CASES = {
    "box": {"bboxes": [20, 230, 320, 900]},
    "boxes": {"bboxes": [[20, 230, 320, 900], [650, 380, 810, 880], [200, 400, 600, 800]]},
    "points": {"points": [[150, 600], [700, 650]]},
    "points_labels": {"points": [[150, 600], [400, 500], [700, 650]], "labels": [1, 0, 1]},
    "combined": {"bboxes": [[650, 380, 810, 880]], "points": [[150, 600]], "labels": [1]},
}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("ckpt", ["FastSAM-s.pt", "FastSAM-x.pt"])
def test_prompts_match_ultralytics(ckpt, ultra_ckpts: Path, ultra_assets: Path, tmp_path) -> None:
    image = ultra_assets / "bus.jpg"
    (tmp_path / "cases.json").write_text(json.dumps(CASES))
    ref_path = tmp_path / "ref.npz"
    script = str(REFERENCE / "ultra_prompts.py")
    run_script(
        [
            script,
            str(ultra_ckpts / ckpt),
            str(image),
            str(tmp_path / "cases.json"),
            str(ref_path),
            "--imgsz",
            str(IMGSZ),
        ],
        tmp_path,
    )
    ref = np.load(ref_path)
    model = FastSAM(ultra_ckpts / ckpt)
    h, w = 1080, 810
    # ultralytics snaps boxes within 20 px of the border after the masks exist, fastsam (as the
    # original) within 20 input-frame px before: detections near the border differ by design
    margin = 20 * max(h, w) / IMGSZ
    interior_checked = 0
    for name, kwargs in CASES.items():
        results = model(str(image), imgsz=IMGSZ, conf=0.4, iou=0.9, **kwargs)
        assert isinstance(results, list) and len(results) == 1 and isinstance(results[0], Results)
        r = results[0]
        ref_masks = np.unpackbits(ref[f"{name}/masks"], axis=-1, count=w).astype(bool)
        assert r.masks is not None and tuple(r.masks.data.shape) == tuple(ref[f"{name}/shape"]), name
        types = [str(r.masks.data.dtype), str(r.boxes.xyxy.dtype), str(r.boxes.conf.dtype)]
        assert types == ref[f"{name}/types"].tolist(), name
        ours = r.masks.data.numpy().astype(bool)
        np.testing.assert_allclose(r.boxes.conf.numpy(), ref[f"{name}/conf"], atol=1e-4, err_msg=name)
        for i, (box, ref_box) in enumerate(zip(r.boxes.xyxy.numpy(), ref[f"{name}/xyxy"])):
            interior = all(min(b[0], b[1], w - b[2], h - b[3]) > margin for b in (box, ref_box))
            if interior:
                interior_checked += 1
                assert _iou(ours[i], ref_masks[i]) >= 0.99, (name, i)
                np.testing.assert_allclose(box, ref_box, atol=0.5, err_msg=f"{name} {i}")
            else:
                assert _iou(ours[i], ref_masks[i]) >= 0.9, (name, i)
    assert interior_checked >= 3  # random weights: most boxes reach a border


def _segments() -> Segments:
    """Three hand-made masks on a 40x60 image, in score order: a big one, a small one inside it, a far one."""
    masks = np.zeros((3, 40, 60), bool)
    masks[0, 5:35, 5:35] = True
    masks[1, 10:20, 10:20] = True
    masks[2, 20:30, 45:55] = True
    return Segments.from_masks(masks, np.array([0.9, 0.8, 0.7], np.float32))


def test_select_ultralytics_rules() -> None:
    seg = _segments()
    # boxes: per box the best IoU with the filled box; coordinates truncated like int32
    assert select_ultralytics(seg, bboxes=[10.9, 10.9, 20.9, 20.9]).tolist() == [1]
    assert select_ultralytics(seg, bboxes=[[44, 19, 56, 31], [4, 4, 36, 36]]).tolist() == [0, 2]
    # points: masks containing a foreground point, minus masks containing a background point,
    # whatever the order of the points
    assert select_ultralytics(seg, points=[15, 15]).tolist() == [0, 1]
    assert select_ultralytics(seg, points=[[15, 15], [50, 25]], labels=[1, 1]).tolist() == [0, 1, 2]
    assert select_ultralytics(seg, points=[[15, 15], [30, 30]], labels=[1, 0]).tolist() == [1]
    assert select_ultralytics(seg, points=[[30, 30], [15, 15], [50, 25]], labels=[0, 1, 1]).tolist() == [1, 2]
    # all labels background: start from every mask
    assert select_ultralytics(seg, points=[[50, 25]], labels=[0]).tolist() == [0, 1]
    # several kinds are OR-ed, kept in score order
    assert select_ultralytics(seg, bboxes=[44, 19, 56, 31], points=[[15, 15]], labels=[1]).tolist() == [0, 1, 2]
    assert select_ultralytics(seg, bboxes=[38, 0, 42, 4]).tolist() == []  # overlaps no mask: nothing
    with pytest.raises(FastSAMError, match="outside"):
        select_ultralytics(seg, points=[[60, 5]])
    with pytest.raises(FastSAMError, match="labels"):
        select_ultralytics(seg, points=[[5, 5]], labels=[1, 0])
    with pytest.raises(FastSAMError, match="empty"):
        select_ultralytics(seg, bboxes=[10, 10, 5, 20])


def test_results_view_shapes_and_values() -> None:
    seg = _segments()
    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    r = Results.from_rgb(seg, rgb, path="x.png")
    assert np.array_equal(r.orig_img, rgb[..., ::-1]) and r.orig_shape == (40, 60) and len(r) == 3
    assert r.masks is not None and r.masks.data.dtype == torch.uint8 and r.masks.data.shape == (3, 40, 60)
    assert torch.equal(r.masks.data.bool(), torch.from_numpy(seg.masks))
    assert r.boxes.data.shape == (3, 6) and r.boxes.xyxy.dtype == torch.float32
    assert r.boxes.xyxy[0].tolist() == [5, 5, 35, 35] and r.boxes.xywh[0].tolist() == [20, 20, 30, 30]
    assert r.boxes.conf.tolist() == pytest.approx([0.9, 0.8, 0.7]) and r.boxes.cls.tolist() == [0, 0, 0]
    assert r.boxes.xyxyn[2].tolist() == pytest.approx([45 / 60, 20 / 40, 55 / 60, 30 / 40])
    # outlines lie on the mask; normalised ones are in [0, 1]
    xy = r.masks.xy[1]
    assert xy.dtype == np.float32 and xy[:, 0].min() == 10 and xy[:, 1].max() == 19
    assert all(p.min() >= 0 and p.max() <= 1 for p in r.masks.xyn)
    # indexing by int, boolean tensor and list keeps the detections together
    sub = r[torch.tensor([False, True, True])]
    assert len(sub) == 2 and sub.boxes.conf.tolist() == pytest.approx([0.8, 0.7])
    assert torch.equal(sub.masks.data, r.masks.data[1:]) and r[0].boxes.xyxy.shape == (1, 4)
    assert len(r[[]]) == 0 and r[[]].masks is None and r[[]].boxes.data.shape == (0, 6)
    # writing into masks.data (as some scripts do) leaves the result untouched
    r.masks.data[:] = 0
    assert seg.masks[0].any()
    plot = r.plot()
    assert plot.shape == (40, 60, 3) and plot.dtype == np.uint8 and not np.array_equal(plot, r.orig_img)
    assert np.array_equal(r.plot(boxes=False, masks=False), r.orig_img)
    summary = r.summary()
    assert summary[2]["box"] == {"x1": 45.0, "y1": 20.0, "x2": 55.0, "y2": 30.0} and summary[0]["name"] == "object"


def test_call_with_prompts_equals_selection_on_everything(small_ckpt, ultra_assets) -> None:
    model = FastSAM(small_ckpt)
    image = str(ultra_assets / "zidane.jpg")
    seg = model(image, imgsz=320)
    results = model(image, imgsz=320, bboxes=[[700, 100, 1000, 400]], points=[[300, 400]], labels=[1])
    idx = select_ultralytics(seg, bboxes=[[700, 100, 1000, 400]], points=[[300, 400]], labels=[1])
    assert len(idx) >= 1 and torch.equal(results[0].masks.data.bool(), torch.from_numpy(seg.masks[idx]))
    assert np.array_equal(results[0].boxes.xyxy.numpy(), seg.boxes[idx])
    assert set(results[0].speed) == {"preprocess", "inference", "postprocess"}
    # a list of images gives one Results per image, each with the prompt applied
    both = model([image, image], imgsz=320, bboxes=[700, 100, 1000, 400])
    assert len(both) == 2 and all(len(r) == 1 for r in both)
    with pytest.raises(FastSAMError, match="labels= needs points="):
        model(image, imgsz=320, labels=[1])
    with pytest.raises(FastSAMError, match="outside"):
        model(image, imgsz=320, points=[[5000, 10]])


def test_compat_fastsam_is_ultralytics_shaped(small_ckpt, ultra_assets) -> None:
    """``from fastsam.compat import FastSAM``: always a list, numpy images are BGR, ultralytics' defaults."""
    from PIL import Image

    path = ultra_assets / "zidane.jpg"
    model = UltraFastSAM(small_ckpt)
    by_path = model(str(path), imgsz=320, retina_masks=True, conf=0.4, iou=0.9)
    bgr = np.asarray(Image.open(path).convert("RGB"))[..., ::-1]
    by_array = model.predict(bgr, imgsz=320, retina_masks=True, conf=0.4, iou=0.9, verbose=False)
    assert isinstance(by_path, list) and len(by_path) == 1
    assert torch.equal(by_path[0].masks.data, by_array[0].masks.data) and np.array_equal(by_array[0].orig_img, bgr)
    native = FastSAM(small_ckpt)(str(path), imgsz=320)
    assert torch.equal(by_path[0].masks.data.bool(), torch.from_numpy(native.masks))
    # ultralytics' defaults: conf 0.25 keeps more masks than conf 0.4
    assert len(model(str(path), imgsz=320, max_det=1000)[0]) > len(
        model(str(path), imgsz=320, conf=0.4, max_det=1000)[0]
    )
    with pytest.raises(FastSAMError, match="unsupported option"):
        model(str(path), imgsz=320, tracker="bytetrack.yaml")
    with pytest.raises(FastSAMError, match="save=True"):
        model(str(path), imgsz=320, save=True)


def test_texts_in_the_call_use_local_clip_weights() -> None:
    """``texts=`` picks, per text, the mask CLIP ranks first (here the shipped demo model and CLIP)."""
    from fastsam.text import get_scorer, select_by_text
    from fastsam.weights import default_clip_path

    image = str(Path(__file__).resolve().parents[1] / "examples" / "shapes.jpg")
    model = FastSAM()
    seg = model(image)
    texts = ["a red star", "a blue ellipse"]
    rgb = np.asarray(Image.open(image).convert("RGB"))
    expected = sorted({int(i[0]) for i in select_by_text(seg, rgb, texts, get_scorer(default_clip_path()))})
    r = model(image, texts=texts)[0]
    assert len(expected) >= 1 and np.array_equal(r.segments.scores, seg.scores[expected])
    assert torch.equal(r.masks.data.bool(), torch.from_numpy(seg.masks[expected]))
    with pytest.raises(FastSAMError, match="texts must be"):
        model(image, texts=[""])
    with pytest.raises(FastSAMError, match="CLIP weights not found"):
        model(image, texts="a dog", clip_weights="missing-clip.pt")
