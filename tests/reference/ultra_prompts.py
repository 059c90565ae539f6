"""Test-only reference: ultralytics' own prompt API (AGPL; never imported by the package).

    python ultra_prompts.py CKPT IMAGE CASES.json OUT.npz --imgsz N --conf C --iou I

CASES.json maps a case name to the keyword arguments of ``FastSAM(CKPT)(IMAGE, bboxes=, points=,
labels=)``; OUT.npz holds, per case, the selected masks (bit-packed rows), ``boxes.xyxy``,
``boxes.conf`` and the dtypes and shapes of ``masks.data``, ``boxes.xyxy`` and ``boxes.conf``.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("YOLO_VERBOSE", "False")

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("image")
    ap.add_argument("cases")
    ap.add_argument("out")
    ap.add_argument("--imgsz", type=int, required=True)
    ap.add_argument("--conf", type=float, default=0.4)
    ap.add_argument("--iou", type=float, default=0.9)
    args = ap.parse_args()
    from ultralytics import FastSAM

    model = FastSAM(args.ckpt)
    with open(args.cases) as f:
        cases = json.load(f)
    out: dict[str, np.ndarray] = {}
    for name, kwargs in cases.items():
        r = model(
            args.image, imgsz=args.imgsz, conf=args.conf, iou=args.iou, retina_masks=True, device="cpu", **kwargs
        )[0]
        masks = r.masks.data
        out[f"{name}/masks"] = np.packbits(masks.cpu().numpy().astype(bool), axis=-1)
        out[f"{name}/xyxy"] = r.boxes.xyxy.cpu().numpy()
        out[f"{name}/conf"] = r.boxes.conf.cpu().numpy()
        out[f"{name}/types"] = np.array([str(masks.dtype), str(r.boxes.xyxy.dtype), str(r.boxes.conf.dtype)])
        out[f"{name}/shape"] = np.array(masks.shape)
    np.savez(args.out, **out)


if __name__ == "__main__":
    main()
