"""Speed of the zero-shot commands: images/s of each task end to end (model, per-image scoring, final
metrics) on synthetic data of the benchmarks' image sizes, and the projected time of the full sets.

    python bench/zeroshot.py --model /tmp/ckpts/FastSAM-s.pt --imgsz 1024 --n 3 [--device cpu]

edges: BSDS-size scenes (321 x 481, two annotators); proposals and instances: COCO-size scenes
(480 x 640, detector boxes = the annotated boxes). The projections divide the set sizes (BSDS500 test
200, COCO val2017 5000, LVIS v1 val 19809 images) by the measured rate; COCO/LVIS proposals
evaluate 1000 proposals per image, whose final pycocotools/lvis pass grows with the set and is
not in the rate measured on a few images.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _zeroshot_data import write_bsds, write_coco

from fastsam import FastSAM
from fastsam.config import PredictConfig
from fastsam.zeroshot.edges import EDGE_CONFIG, evaluate_edges
from fastsam.zeroshot.instances import INSTANCE_CONFIG, evaluate_instances
from fastsam.zeroshot.proposals import PROPOSAL_CONFIG, evaluate_proposals

SETS = {"edges": [("BSDS500 test", 200)], "proposals": [("COCO val2017", 5000), ("LVIS v1 val", 19809)]}
SETS["instances"] = SETS["proposals"]


def _cfg(base: PredictConfig, imgsz: int) -> PredictConfig:
    return PredictConfig(imgsz=imgsz, conf=base.conf, iou=base.iou, max_det=base.max_det)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/tmp/ckpts/FastSAM-s.pt")
    ap.add_argument("--imgsz", type=int, default=1024)
    ap.add_argument("--n", type=int, default=3, help="images per task")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    model = FastSAM(args.model, device=args.device, cache_size=0)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_bsds(root / "bsds", args.n, size=(321, 481))
        ann = write_coco(root / "coco", args.n, size=(480, 640))
        data = json.loads(ann.read_text())
        dets = [{**{k: a[k] for k in ("image_id", "bbox", "category_id")}, "score": 0.9} for a in data["annotations"]]
        (root / "dets.json").write_text(json.dumps(dets))
        model.segment(root / "coco" / "images" / "000000000001.jpg", _cfg(PROPOSAL_CONFIG, args.imgsz))  # warm-up
        runs = {
            "edges": lambda out: evaluate_edges(
                root / "bsds", out, predictor=model, config=_cfg(EDGE_CONFIG, args.imgsz)
            ),
            "proposals": lambda out: evaluate_proposals(
                ann, out, data=root / "coco" / "images", predictor=model, config=_cfg(PROPOSAL_CONFIG, args.imgsz)
            ),
            "instances": lambda out: evaluate_instances(
                ann, root / "dets.json", root / "coco" / "images", out, predictor=model,
                config=_cfg(INSTANCE_CONFIG, args.imgsz),
            ),
        }  # fmt: skip
        for task, run in runs.items():
            start = time.perf_counter()
            run(root / f"out-{task}")
            rates[task] = args.n / (time.perf_counter() - start)
    name = Path(args.model).name
    print(f"zero-shot commands, {name} at imgsz {args.imgsz}, {args.device}, {args.n} synthetic images per task")
    print()
    print("| command | images/s | s/image | projected full set |")
    print("|---|---|---|---|")
    for task, rate in rates.items():
        proj = ", ".join(f"{label} ({n}): {n / rate / 3600:.1f} h" for label, n in SETS[task])
        print(f"| zeroshot {task} | {rate:.3f} | {1 / rate:.2f} | {proj} |")


if __name__ == "__main__":
    main()
