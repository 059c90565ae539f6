"""The original's prompt API runs unchanged scripts; CLI prompts end to end on a real photo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fastsam import FastSAM, FastSAMError, select_by_boxes, select_by_points
from fastsam.cli import main

# A script as written for the original FastSAM (README usage), only the import line changed.
ORIGINAL_SCRIPT = """
from fastsam import FastSAM, FastSAMPrompt

model = FastSAM(MODEL_PATH)
IMAGE_PATH = IMAGE
DEVICE = 'cpu'
everything_results = model(IMAGE_PATH, device=DEVICE, retina_masks=True, imgsz=320, conf=0.4, iou=0.9,)
prompt_process = FastSAMPrompt(IMAGE_PATH, everything_results, device=DEVICE)

ann_all = prompt_process.everything_prompt()
ann_box = prompt_process.box_prompt(bbox=[200, 200, 600, 500])
ann_boxes = prompt_process.box_prompt(bboxes=[[700, 100, 1000, 400], [200, 200, 600, 500]])
ann_point = prompt_process.point_prompt(points=[[620, 360]], pointlabel=[1])
prompt_process.plot(annotations=ann_point, output_path=OUT_DIR + '/point.jpg', points=[[620, 360]], point_label=[1])
prompt_process.plot(annotations=ann_boxes, output_path=OUT_DIR + '/boxes.png', bboxes=[[700, 100, 1000, 400]],
                    mask_random_color=False, better_quality=False, withContours=False)
"""


@pytest.fixture(scope="module")
def photo(ultra_assets):
    return ultra_assets / "zidane.jpg"


@pytest.fixture(scope="module")
def everything(small_ckpt, photo):
    return FastSAM(small_ckpt)(photo, imgsz=320)


def test_original_script_runs_and_agrees_with_new_api(small_ckpt, photo, everything, tmp_path):
    scope = {"MODEL_PATH": str(small_ckpt), "IMAGE": str(photo), "OUT_DIR": str(tmp_path)}
    exec(ORIGINAL_SCRIPT, scope)
    seg = everything
    assert np.array_equal(scope["ann_all"], seg.masks)
    box_idx = select_by_boxes(seg, [[200, 200, 600, 500]])[0]
    assert np.array_equal(scope["ann_box"][0], seg.mask(int(box_idx)))
    both = select_by_boxes(seg, [[700, 100, 1000, 400], [200, 200, 600, 500]])
    assert scope["ann_boxes"].shape == (2, 720, 1280)  # one mask per box, in the order given
    assert np.array_equal(scope["ann_boxes"][1], seg.mask(int(both[1])))
    assert np.array_equal(scope["ann_point"][0], select_by_points(seg, [[620, 360]], [1]).mask)
    point_png = np.asarray(Image.open(tmp_path / "point.jpg").convert("RGB"))
    assert point_png.shape == (720, 1280, 3)
    boxes_png = np.asarray(Image.open(tmp_path / "boxes.png").convert("RGB")).astype(int)
    src = np.asarray(Image.open(photo).convert("RGB")).astype(int)
    outline = np.zeros((720, 1280), bool)
    outline[97:404, 697:1004] = True
    outline[103:398, 703:998] = False  # the drawn box outline (2 px wide)
    inside = scope["ann_boxes"].any(0) & ~outline
    # fixed colour (30, 144, 255) at alpha 0.6 over the photo inside the masks
    expected = np.rint(src[inside] * 0.4 + np.array([30, 144, 255]) * 0.6)
    assert np.abs(boxes_png[inside] - expected).max() <= 1
    far = ~scope["ann_boxes"].any(0) & ~outline
    assert np.array_equal(boxes_png[far], src[far])
    assert (boxes_png[outline] != src[outline]).any()


def test_text_prompt_without_weights_uses_the_demo_clip_like_the_cli(photo, everything, monkeypatch):
    """Issue 10, defect 9: with no clip_weights, text_prompt takes the shipped demo CLIP, as
    ``fastsam prompt --text`` does; only an installation without it gets the clear error."""
    from fastsam import FastSAMPrompt
    from fastsam.text import get_scorer, select_by_text
    from fastsam.weights import default_clip_path

    prompt = FastSAMPrompt(str(photo), everything)
    ann = prompt.text_prompt(text="a red star")
    best = select_by_text(everything, prompt.image, ["a red star"], get_scorer(default_clip_path()))[0]
    assert ann.shape == (1, 720, 1280) and best.size == 1
    assert np.array_equal(ann[0], everything.mask(int(best[0])))

    import fastsam.weights as weights

    def missing():
        raise FastSAMError("this installation ships no demo CLIP model")

    monkeypatch.setattr(weights, "default_clip_path", missing)
    with pytest.raises(FastSAMError, match="clip_weights"):
        FastSAMPrompt(str(photo), everything).text_prompt(text="a dog")


def test_cli_prompt_points_and_boxes(small_ckpt, photo, everything, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "prompt",
            str(photo),
            "--model",
            str(small_ckpt),
            "--imgsz",
            "320",
            "--out",
            str(out),
            "--point",
            "620,360",
            "--point",
            "300,200,0",
            "--box",
            "700,100,1000,400",
            "--box",
            "200,200,600,500",
        ]
    )
    assert code == 0, capsys.readouterr().err
    records = json.loads((out / "zidane.json").read_text())
    assert [r["prompt"]["type"] for r in records] == ["points", "box", "box"]
    from pycocotools import mask as mask_utils

    merged = select_by_points(everything, [[620, 360], [300, 200]], [1, 0]).mask
    assert np.array_equal(mask_utils.decode(records[0]["segmentation"]).astype(bool), merged)
    idx = select_by_boxes(everything, [[700, 100, 1000, 400], [200, 200, 600, 500]])
    for rec, k in zip(records[1:], idx):
        assert rec["prompt"]["indices"] == [int(k)]
        assert np.array_equal(mask_utils.decode(rec["segmentation"]).astype(bool), everything.mask(int(k)))
    assert Image.open(out / "zidane.png").size == (1280, 720)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--point", "2000,10"], "outside"),
        (["--box", "10,10,5,5"], "empty"),
        (["--text", "a dog", "--clip-weights", "missing-clip.pt"], "CLIP weights not found"),
        ([], "at least one"),
    ],
)
def test_cli_prompt_errors(small_ckpt, photo, tmp_path, capsys, extra, message):
    code = main(["prompt", str(photo), "--model", str(small_ckpt), "--imgsz", "256", "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fastsam: error:") and message in err[0]


def test_cli_rejects_malformed_point(small_ckpt, photo, tmp_path, capsys):
    code = main(["prompt", str(photo), "--model", str(small_ckpt), "--point", "1,2,3,4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--point" in err[0] and "1,2,3,4" in err[0]


@pytest.mark.slow
def test_cli_prompt_text_with_local_clip_weights(small_ckpt, photo, everything, tmp_path, capsys):
    """--text with a seeded random open_clip ViT-B-32 saved to a file: one record, the argmax mask."""
    import open_clip
    import torch

    from fastsam.text import get_scorer, select_by_text

    torch.manual_seed(0)
    weights = tmp_path / "clip.pt"
    torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), weights)
    out = tmp_path / "out"
    code = main(
        [
            "prompt",
            str(photo),
            "--model",
            str(small_ckpt),
            "--imgsz",
            "320",
            "--out",
            str(out),
            "--text",
            "a person",
            "--clip-weights",
            str(weights),
        ]
    )
    assert code == 0, capsys.readouterr().err
    records = json.loads((out / "zidane.json").read_text())
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    expected = select_by_text(everything, rgb, ["a person"], get_scorer(weights))[0]
    assert [r["prompt"] for r in records] == [{"type": "text", "text": "a person", "indices": expected.tolist()}]
