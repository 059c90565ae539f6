"""Run fastsam in a process where ultralytics cannot be imported; dump outputs for the parity tests.

    python ours_run.py CKPT IMAGE REF.npz OUT.npz --imgsz N --conf C --iou I [--no-retina]

REF.npz (from ultra_ref.py) supplies the letterboxed input tensor, so raw head outputs are compared on
identical inputs. Everything else starts from the image file.
"""

from __future__ import annotations

import argparse
import sys
from importlib.abc import MetaPathFinder


class _BlockUltralytics(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ultralytics" or name.startswith("ultralytics."):
            raise ImportError("ultralytics is blocked in this process")
        return None


sys.meta_path.insert(0, _BlockUltralytics())

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fastsam import FastSAM, PredictConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("image")
    ap.add_argument("ref")
    ap.add_argument("out")
    ap.add_argument("--imgsz", type=int, default=1024)
    ap.add_argument("--conf", type=float, default=0.4)
    ap.add_argument("--iou", type=float, default=0.9)
    ap.add_argument("--no-retina", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    ref = np.load(a.ref)
    cfg = PredictConfig(imgsz=a.imgsz, conf=a.conf, iou=a.iou, retina_masks=not a.no_retina)
    out = {}
    for tag, fuse in (("plain", False), ("fused", True)):
        model = FastSAM(a.ckpt, fuse=fuse, cache_size=0)  # plain: fp32 NCHW, as the reference
        head, protos = model.forward(torch.from_numpy(ref["input"]))
        seg = model.segment(a.image, cfg)
        out.update(
            {
                f"{tag}_head": head.numpy(),
                f"{tag}_protos": protos.numpy(),
                f"{tag}_boxes": seg.boxes,
                f"{tag}_scores": seg.scores,
                f"{tag}_stability": seg.stability,
                f"{tag}_masks": np.packbits(seg.masks, axis=-1),
            }
        )
    out["image_size"] = np.array(seg.image_size)
    assert "ultralytics" not in sys.modules, "fastsam imported ultralytics"
    np.savez_compressed(a.out, **out)


if __name__ == "__main__":
    main()
