"""Call sequences of downstream tools that use FastSAM (written here after their public usage, not
copied): each runs on fastsam unchanged apart from the import, and gives the masks the original's
rules give, computed independently below from the dense masks."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastsam import FastSAM, FastSAMError, FastSAMPrompt, Segments
from fastsam.compat import FastSAM as UltraFastSAM
from fastsam.compat import (
    box_prompt,
    convert_box_xywh_to_xyxy,
    fast_process,
    filter_masks,
    format_results,
    get_bbox_from_mask,
    point_prompt,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _original_box_choice(masks: torch.Tensor, box: list[float]) -> int:
    """The original's box rule, from its description: IoU of each mask with the filled box, argmax."""
    x1, y1, x2, y2 = (round(v) for v in box)
    inside = masks[:, y1:y2, x1:x2].float().sum((1, 2))
    union = (y2 - y1) * (x2 - x1) + masks.float().sum((1, 2)) - inside
    return int(torch.argmax(inside / union))


@pytest.fixture(scope="module")
def photo(ultra_assets) -> Path:
    return ultra_assets / "zidane.jpg"


def test_geospatial_style_sequence(small_ckpt, photo, tmp_path) -> None:
    """segment-geospatial: everything mode, FastSAMPrompt, reads ``.img``, every prompt, plots."""
    model = FastSAM(small_ckpt)
    everything = model(str(photo), device="cpu", retina_masks=True, imgsz=320, conf=0.4, iou=0.9)
    prompt_process = FastSAMPrompt(str(photo), everything, device="cpu")
    h, w = prompt_process.img.shape[:2]
    assert (h, w) == (720, 1280) and prompt_process.img.dtype == np.uint8

    ann = prompt_process.everything_prompt()
    assert isinstance(ann, torch.Tensor) and ann.dtype == torch.float32 and ann.shape == (len(everything), h, w)
    assert torch.equal(ann.bool(), torch.from_numpy(everything.masks))

    boxes = [[700, 100, 1000, 400], [200, 200, 600, 500]]
    ann_box = prompt_process.box_prompt(bboxes=boxes)
    expected = [_original_box_choice(ann, b) for b in boxes]
    assert isinstance(ann_box, np.ndarray) and ann_box.dtype == np.float32
    assert ann_box.shape == (len(set(expected)), h, w)
    assert np.array_equal(ann_box[0], ann[expected[0]].numpy())

    ann_point = prompt_process.point_prompt(points=[[620, 360]], pointlabel=[1])
    assert isinstance(ann_point, np.ndarray) and ann_point.dtype == bool and ann_point.shape == (1, h, w)
    # the original's point rule: masks by area, largest first, each hit sets its pixels to the label
    canvas = np.zeros((h, w), bool)
    for k in np.argsort(-everything.areas, kind="stable"):
        if everything.masks[k][360, 620]:
            canvas[everything.masks[k]] = True
    assert np.array_equal(ann_point[0], canvas)

    # its results are the original's type (a list of Results) and it writes the plot it is asked for
    assert prompt_process.results is not None and torch.equal(prompt_process.results[0].masks.data.bool(), ann.bool())
    out = tmp_path / "geo" / "masks.png"
    prompt_process.plot(annotations=ann_box, output_path=str(out), bboxes=boxes, withContours=False)
    drawn = prompt_process.plot_to_result(ann_box, bboxes=boxes, withContours=False)
    assert drawn.shape == (h, w, 3) and np.array_equal(np.asarray(Image.open(out).convert("RGB")), drawn)
    with pytest.raises(FastSAMError, match="replace the input"):
        prompt_process.plot(annotations=ann_box, output_path=str(photo))


def test_autodistill_style_sequence_one_text_prompt_per_class() -> None:
    """autodistill-fastsam: for each class of an ontology ``text_prompt(text=...)``, then ``for mask in ann``."""
    from fastsam.text import get_scorer, select_by_text
    from fastsam.weights import default_clip_path

    image = str(EXAMPLES / "shapes.jpg")
    model = FastSAM()  # the shipped demo model (and below the shipped demo CLIP)
    everything = model(image, retina_masks=True, conf=0.4, iou=0.9)
    prompt_process = FastSAMPrompt(image, everything, device="cpu")
    scorer = get_scorer(default_clip_path())
    ontology = {"a red star": "star", "a blue circle": "circle"}
    found = {}
    for caption, cls in ontology.items():
        ann = prompt_process.text_prompt(text=caption)
        masks = []
        for mask in ann:  # the iteration downstream code does
            masks.append(mask)
        assert len(masks) == 1 and masks[0].dtype == bool and masks[0].shape == everything.image_size
        best = select_by_text(everything, prompt_process.img, [caption], scorer)[0]
        assert np.array_equal(masks[0], everything.mask(int(best[0])))
        found[cls] = masks[0]
    assert not np.array_equal(found["star"], found["circle"])


def test_grounded_sam_style_sequence_functional_box_prompt(small_ckpt, photo, tmp_path) -> None:
    """Grounded-SAM's FastSAM demo: ultralytics-style results, detector boxes in xywh, the original's
    functional ``box_prompt(results[0].masks.data, box, h, w)``, then ``fast_process``."""
    model = UltraFastSAM(small_ckpt)
    results = model(str(photo), imgsz=320, device="cpu", retina_masks=True, iou=0.9, conf=0.4, max_det=100)
    ori_h, ori_w = results[0].orig_shape
    args = argparse.Namespace(
        img_path=str(photo), output=str(tmp_path / "out"), better_quality=True, withContours=True, point_label=None
    )
    masks = results[0].masks.data
    for xywh in ([700, 100, 300, 300], [200, 200, 400, 300]):
        box = convert_box_xywh_to_xyxy(xywh)
        mask, idx = box_prompt(masks, box, ori_h, ori_w)
        assert int(idx) == _original_box_choice(masks, box)
        assert mask.shape == (ori_h, ori_w) and np.array_equal(mask, masks[int(idx)].numpy())
        fast_process(annotations=np.array([mask]), args=args, mask_random_color=True, bbox=box)
    written = Image.open(tmp_path / "out" / photo.name)
    assert written.size == (ori_w, ori_h)
    # masks of another size: the box is scaled to them, as the original does
    small = masks[:, ::2, ::2]
    _, idx_small = box_prompt(small, [700, 100, 1000, 400], ori_h, ori_w)
    assert int(idx_small) == _original_box_choice(small, [350, 50, 500, 200])


def test_functional_helpers() -> None:
    assert convert_box_xywh_to_xyxy([10, 20, 30, 40]) == [10, 20, 40, 60]
    masks = np.zeros((3, 20, 30), bool)
    masks[0, 2:18, 2:28] = True
    masks[1, 5:10, 5:10] = True
    masks[2, 12:16, 20:26] = True
    seg = Segments.from_masks(masks, np.array([0.9, 0.8, 0.7], np.float32))
    anns = format_results(seg, filter=20)
    assert [a["id"] for a in anns] == [0, 1, 2] and anns[1]["area"] == 25 and anns[0]["bbox"].shape == (6,)
    assert [a["id"] for a in format_results(seg, filter=25)] == [0, 1]  # area 24 < 25 is dropped
    kept, removed = filter_masks(format_results(seg))
    assert [a["id"] for a in kept] == [0] and removed == {1, 2}  # both lie wholly inside mask 0
    assert get_bbox_from_mask(masks[2]) == [20, 12, 26, 16]
    # the functional point rule adds masks under foreground points and subtracts under background ones
    onemask, zero = point_prompt(format_results(seg), [[6, 6], [21, 13]], [1, 0], 20, 30)
    assert zero == 0 and onemask.dtype == bool
    expected = (masks[0].astype(int) + masks[1] - masks[0] - masks[2]) >= 1
    assert np.array_equal(onemask, expected)
    with pytest.raises(FastSAMError, match="outside"):
        point_prompt(format_results(seg), [[30, 5]], [1], 20, 30)


def test_prompts_return_an_empty_list_when_nothing_was_segmented(photo) -> None:
    for results in (None, [], Segments.empty((720, 1280))):
        prompt = FastSAMPrompt(str(photo), results)
        assert prompt.everything_prompt() == []
        assert prompt.box_prompt(bbox=[10, 10, 50, 50]) == []
        assert prompt.point_prompt(points=[[20, 20]], pointlabel=[1]) == []
        assert prompt.text_prompt(text="a dog") == []
        assert prompt.plot_to_result([]).shape == (720, 1280, 3)
