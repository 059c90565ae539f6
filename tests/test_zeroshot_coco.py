"""Zero-shot proposals and instances: hand-built predictions with known AR / AP on COCO- and LVIS-format
files (pycocotools' and lvis' own summaries agree), the commands end to end, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _zeroshot_data import write_coco
from pycocotools import mask as mask_utils

from fastsam.cli import main
from fastsam.results import Segments
from fastsam.zeroshot._coco import lvis_numpy
from fastsam.zeroshot.instances import mask_ap, prompt_masks
from fastsam.zeroshot.proposals import AUC_DETS, auc, coco_proposal_metrics, lvis_proposal_metrics, proposal_metrics

H = W = 200
# image 1: A small (20x20), B medium (50x50); image 2: C large (120x120); categories 1, 2, 3
GT = [(1, 1, [10, 10, 20, 20]), (1, 2, [50, 50, 50, 50]), (2, 3, [20, 20, 120, 120])]


def _rle(box: list[float]) -> dict:
    m = np.zeros((H, W), dtype=np.uint8, order="F")
    x, y, w, h = (int(v) for v in box)
    m[y : y + h, x : x + w] = 1
    rle = mask_utils.encode(m)
    rle["counts"] = rle["counts"].decode()
    return rle


def _dataset(lvis: bool = False) -> dict:
    images = [{"id": i, "height": H, "width": W, "file_name": f"{i}.jpg"} for i in (1, 2)]
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]
    if lvis:
        for im in images:
            im.update(neg_category_ids=[], not_exhaustive_category_ids=[])
        for c, f in zip(cats, "rcf"):
            c["frequency"] = f
    anns = [
        {
            "id": k + 1,
            "image_id": i,
            "category_id": c,
            "bbox": b,
            "area": b[2] * b[3],
            "iscrowd": 0,
            "segmentation": _rle(b),
        }
        for k, (i, c, b) in enumerate(GT)
    ]
    return {"images": images, "annotations": anns, "categories": cats}


def _proposals(hit_b: bool = True) -> list[dict]:
    """A at rank 1 and B at rank 20 of image 1, C at rank 150 of image 2; junk elsewhere (no overlap)."""
    out = []
    for image, ranks in ((1, {1: GT[0][2], 20: GT[1][2] if hit_b else None}), (2, {150: GT[2][2]})):
        for r in range(1, 201):
            box = ranks.get(r) or [180, 180, 10, 10]
            out.append(
                {"image_id": image, "category_id": 1, "bbox": box, "score": 1 - r / 1000, "segmentation": _rle(box)}
            )
    return out


def test_coco_proposals_have_the_known_recalls_and_match_pycocotools(tmp_path: Path) -> None:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds, dets = _dataset(), _proposals()
    m = proposal_metrics(ds, dets, [1, 2], lvis=False)
    for prefix in ("", "mask_"):
        assert m[f"{prefix}AR@10"] == pytest.approx(1 / 3) and m[f"{prefix}AR@100"] == pytest.approx(2 / 3)
        assert m[f"{prefix}AR@1000"] == pytest.approx(1.0)
        assert all(m[f"{prefix}AR_{a}@1000"] == pytest.approx(1.0) for a in ("small", "medium", "large"))
    curve = [1 / 3 if n < 20 else 2 / 3 if n < 150 else 1.0 for n in AUC_DETS]
    assert m["AUC"] == pytest.approx(auc(AUC_DETS, curve))
    span = np.log(1000)
    exact = (np.log(20) / 3 + (np.log(150) - np.log(20)) * 2 / 3 + (span - np.log(150))) / span  # step curve
    assert abs(m["AUC"] - exact) < 0.01  # the trapezoids between the 31 counts smooth each step a little
    # pycocotools' own summary, from files, with the usual maxDets
    (tmp_path / "gt.json").write_text(json.dumps(ds))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "gt.json"))
        for iou_type, prefix in (("bbox", ""), ("segm", "mask_")):
            ev = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), iou_type)
            ev.params.useCats, ev.params.maxDets = 0, [10, 100, 1000]
            ev.evaluate(), ev.accumulate(), ev.summarize()
            ours = [m[f"{prefix}{k}"] for k in ("AR@10", "AR@100", "AR@1000")]
            ours += [m[f"{prefix}AR_{a}@1000"] for a in ("small", "medium", "large")]
            np.testing.assert_allclose(ours, ev.stats[6:12], rtol=0, atol=1e-12)


def test_auc_definition() -> None:
    assert auc([1, 1000], [0.0, 1.0]) == pytest.approx(0.5)
    assert auc(AUC_DETS, [0.4] * len(AUC_DETS)) == pytest.approx(0.4)
    # the paper's Table 3 from its own AR columns, taking AR(1) = 0: FastSAM 15.7 / 47.3 / 63.7 -> 31.6 (32.2 printed)
    assert auc([1, 10, 100, 1000], [0.0, 0.157, 0.473, 0.637]) == pytest.approx(0.3162, abs=1e-4)
    assert {1, 10, 100, 1000} <= set(AUC_DETS) and tuple(sorted(AUC_DETS)) == AUC_DETS


def test_lvis_proposals_frequency_groups_and_lvis_summary(tmp_path: Path) -> None:
    import lvis

    ds = _dataset(lvis=True)
    m = lvis_proposal_metrics(ds, _proposals(hit_b=False), [1, 2], "segm")
    assert m["AR@1000"] == pytest.approx(2 / 3)
    assert m["AR_rare@1000"] == pytest.approx(1.0) and m["AR_common@1000"] == 0.0 and m["AR_frequent@1000"] == 1.0
    assert m["AR_small@1000"] == pytest.approx(1.0) and m["AR_medium@1000"] == 0.0
    # lvis' own run on files (its class-agnostic form: one category)
    agnostic = {**ds, "annotations": [{**a, "category_id": 1} for a in ds["annotations"]]}
    agnostic["categories"] = [{"id": 1, "name": "object", "frequency": "f"}]
    (tmp_path / "gt.json").write_text(json.dumps(agnostic))
    with lvis_numpy():
        gt = lvis.LVIS(str(tmp_path / "gt.json"))
        ev = lvis.LVISEval(gt, lvis.LVISResults(gt, _proposals(hit_b=False), max_dets=1000), "segm")
        ev.params.max_dets = 1000
        ev.run()
    for ours, theirs in (("AR@1000", "AR@1000"), ("AR_small@1000", "ARs@1000"), ("AR_large@1000", "ARl@1000")):
        assert m[ours] == pytest.approx(ev.results[theirs], abs=1e-12)
    box = proposal_metrics(ds, _proposals(), [1, 2], lvis=True)
    assert box["AR@1000"] == pytest.approx(1.0) and box["mask_AR_common@1000"] == pytest.approx(1.0)
    assert coco_proposal_metrics(ds, _proposals(hit_b=False), [2])["AR@1000"] == pytest.approx(1.0)  # image 2 only


def test_box_prompts_take_the_detector_category_and_score_and_score_ap_one(tmp_path: Path) -> None:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds = _dataset()
    masks = np.stack([mask_utils.decode(a["segmentation"]).astype(bool) for a in ds["annotations"][:2]])
    seg = Segments.from_masks(masks, np.array([0.5, 0.4]))
    boxes = [
        {"image_id": 1, "bbox": [11, 11, 18, 18], "category_id": 1, "score": 0.9},  # inside A: A's mask
        {"image_id": 1, "bbox": [48, 48, 54, 54], "category_id": 2, "score": 0.8},  # around B: B's mask
        {"image_id": 1, "bbox": [150, 150, 20, 20], "category_id": 2, "score": 0.3},  # on no mask: the box itself
        {"image_id": 1, "bbox": [300, 300, 10, 10], "category_id": 1, "score": 0.2},  # outside the image
    ]
    results, empty, dropped = prompt_masks(seg, boxes)
    assert (empty, dropped) == (1, 1) and [r["category_id"] for r in results] == [1, 2, 2]
    assert [r["score"] for r in results] == [0.9, 0.8, 0.3]
    assert results[0]["segmentation"]["counts"] == ds["annotations"][0]["segmentation"]["counts"]
    assert results[1]["segmentation"]["counts"] == ds["annotations"][1]["segmentation"]["counts"]
    assert mask_utils.area(results[2]["segmentation"]) == 400
    exact = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9, "segmentation": a["segmentation"]}
        for a in ds["annotations"]
    ]
    m = mask_ap(ds, exact, [1, 2], lvis=False)
    assert m["AP"] == pytest.approx(1.0) and m["APs"] == pytest.approx(1.0) and m["APl"] == pytest.approx(1.0)
    (tmp_path / "gt.json").write_text(json.dumps(ds))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "gt.json"))
        half = [exact[0], {**exact[1], "category_id": 3}, *exact[2:]]  # B labelled wrongly
        ev = COCOeval(gt, gt.loadRes(half), "segm")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    mine = mask_ap(ds, half, [1, 2], lvis=False)
    np.testing.assert_allclose([mine[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")], ev.stats[:6], atol=1e-12)
    assert mine["AP"] < 1.0
    lv = mask_ap(_dataset(lvis=True), exact, [1, 2], lvis=True)
    assert lv["AP"] == pytest.approx(1.0) and lv["APr"] == pytest.approx(1.0) and lv["APf"] == pytest.approx(1.0)


@pytest.mark.slow
def test_commands_end_to_end_resume_limit_and_errors(tmp_path: Path, usage_error) -> None:
    ann = write_coco(tmp_path / "coco", 2)
    images = tmp_path / "coco" / "images"
    out = tmp_path / "p"
    base = ["zeroshot", "proposals", "--data", str(images), "--ann", str(ann), "--out", str(out), "--imgsz", "160"]
    assert main([*base, "--limit", "1"]) == 0
    assert json.loads((out / "metrics.json").read_text())["images"] == 1
    assert main([*base, "--resume"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["images"] == 2 and m["skipped"] == 0 and 0 < m["proposals"] <= 2000
    assert 0.0 < m["AR@10"] <= m["AR@100"] <= m["AR@1000"] <= 1.0 and 0.0 < m["AUC"] < 1.0
    assert 0.0 < m["mask_AR@1000"] <= 1.0
    # the same proposals scored from a results file give the same figures
    parts = [json.loads((out / "parts" / f"{i}.json").read_text()) for i in (1, 2)]
    res = [
        {"image_id": i, "bbox": b, "score": s, "segmentation": r}
        for i, p in zip((1, 2), parts)
        for b, s, r in zip(p["boxes"], p["scores"], p["rles"])
    ]
    (tmp_path / "res.json").write_text(json.dumps(res))
    assert (
        main(
            [
                "zeroshot",
                "proposals",
                "--ann",
                str(ann),
                "--pred",
                str(tmp_path / "res.json"),
                "-o",
                str(tmp_path / "q"),
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "q" / "metrics.json").read_text())
    assert again["AR@100"] == pytest.approx(m["AR@100"], abs=1e-12) and again["AUC"] == pytest.approx(
        m["AUC"], abs=1e-12
    )
    # LVIS proposals and instances (detector boxes = the annotated boxes)
    lv = write_coco(tmp_path / "lvis", 2, lvis=True)
    assert main(["zeroshot", "proposals", "--data", str(tmp_path / "lvis" / "images"), "--ann", str(lv), "--lvis",
                 "-o", str(tmp_path / "l"), "--imgsz", "160"]) == 0  # fmt: skip
    ml = json.loads((tmp_path / "l" / "metrics.json").read_text())
    assert 0.0 < ml["mask_AR@1000"] <= 1.0 and "mask_AR_rare@1000" in ml
    data = json.loads(ann.read_text())
    dets = [
        {"image_id": a["image_id"], "bbox": a["bbox"], "category_id": a["category_id"], "score": 0.9}
        for a in data["annotations"]
    ]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    (images / "000000000002.jpg").unlink()  # a missing image is a counted skip
    inst = ["zeroshot", "instances", "--data", str(images), "--ann", str(ann), "--boxes", str(tmp_path / "dets.json")]
    assert main([*inst, "-o", str(tmp_path / "i"), "--imgsz", "160"]) == 0
    mi = json.loads((tmp_path / "i" / "metrics.json").read_text())
    assert mi["images"] == 1 and mi["skipped"] == 1 and mi["skipped_ids"] == ["2"] and 0.0 < mi["AP"] <= 1.0
    assert mi["masks"] == sum(1 for a in data["annotations"] if a["image_id"] == 1)
    # errors: one line, exit 2, before any model is loaded
    data["annotations"].append({**data["annotations"][0], "id": 999, "image_id": 77})
    (tmp_path / "bad.json").write_text(json.dumps(data))
    line = usage_error(main(["zeroshot", "proposals", "--data", str(images), "--ann", str(tmp_path / "bad.json")]))
    assert "refer to image ids with no image entry" in line
    (tmp_path / "res.json").write_text(json.dumps([{**res[0], "image_id": 5}]))
    line = usage_error(main(["zeroshot", "proposals", "--ann", str(ann), "--pred", str(tmp_path / "res.json")]))
    assert "which the annotations lack" in line
    assert "no such results file" in usage_error(main([*inst[:-1], str(tmp_path / "none.json")]))
    (tmp_path / "garbage.json").write_text("{not json")
    assert "not a JSON results file" in usage_error(main([*inst[:-1], str(tmp_path / "garbage.json")]))
