"""Test-only reference built on ultralytics (AGPL; never imported by the package).

Run as a script in its own process:

    python ultra_ref.py make OUTDIR
        Let ultralytics build FastSAM-s (yolov8s-seg, nc 1, reg_max 16) and the FastSAM-x architecture
        (yolov8x-seg, nc 1, head rebuilt for reg_max 26) with seeded random weights, perturb BatchNorm
        statistics and head biases so that scores spread around the thresholds, and save them with
        ultralytics' own checkpoint routine (``strip_optimizer``: fp16 pickled SegmentationModel).

    python ultra_ref.py make-eps OUTDIR
        FastSAM-s-eps.pt: FastSAM-s (seed 0) whose BatchNorm layers have eps 1e-5, two of them yet
        another value (EPS_LAYERS), set before calibration as a model trained so would have them; and
        FastSAM-n variants with one constant the fastsam network cannot follow (BAD_VARIANTS).

    python ultra_ref.py run CKPT IMAGE OUT.npz --imgsz N --conf C --iou I [--no-retina]
        Reference outputs for one image: raw head outputs on the letterboxed input, the pipeline of the
        original FastSAM rebuilt from ultralytics' ops, and ultralytics' own FastSAMPredictor.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("YOLO_VERBOSE", "False")

import numpy as np
import torch


def _assets() -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent / "assets"


EPS_DEFAULT = 1e-5
EPS_LAYERS = {"model.0.bn": 1e-4, "model.22.cv4.1.1.bn": 0.05}  # ultralytics layer -> eps


def build(scale: str, reg_max: int, seed: int, eps: float | None = None):
    from ultralytics.nn.modules import DFL, Conv
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(seed)
    model = SegmentationModel(f"yolov8{scale}-seg.yaml", nc=1, verbose=False)
    head = model.model[-1]
    if reg_max != head.reg_max:  # FastSAM-x: 26 DFL bins instead of 16
        ch = [seq[0].conv.in_channels for seq in head.cv2]
        c2 = max(16, ch[0] // 4, reg_max * 4)
        head.cv2 = torch.nn.ModuleList(
            torch.nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), torch.nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch
        )
        head.reg_max, head.no = reg_max, head.nc + 4 * reg_max
        head.dfl = DFL(reg_max)
        for m in head.cv2.modules():  # as ultralytics' initialize_weights does for every BN it builds
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03
    if eps is not None:
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = EPS_LAYERS.get(name, eps)
    gen = torch.Generator().manual_seed(seed + 1)
    # Calibrate BatchNorm on real photos so activations neither vanish nor explode, then perturb.
    imgs = []
    for name in ("bus.jpg", "zidane.jpg"):
        import cv2

        im = cv2.imread(str(_assets() / name))[:, :, ::-1]
        im = cv2.resize(im, (320, 320))
        imgs.append(torch.from_numpy(im.copy()).permute(2, 0, 1).float() / 255)
    batch = torch.stack(imgs)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration pass
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.03
                m.weight.copy_(0.6 + 0.8 * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
        for seq in head.cv2:  # DFL logits: sharper, varied box sizes
            seq[2].weight.mul_(4.0)
            seq[2].bias.copy_(torch.randn(seq[2].bias.shape, generator=gen))
        for seq in head.cv4:  # mask coefficients: masks with real structure
            seq[2].weight.mul_(3.0)
        # Class logits: affine-normalise each level to mean -1.2, std 1.5 on the calibration photos,
        # so scores spread smoothly around conf (no saturated ties at 1.0).
        captured = {}
        hooks = [
            seq[2].register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, o))
            for k, seq in enumerate(head.cv3)
        ]
        model(batch)
        for h in hooks:
            h.remove()
        for k, seq in enumerate(head.cv3):
            mean, std = captured[k].mean(), captured[k].std()
            gain = 1.5 / std
            seq[2].weight.mul_(gain)
            seq[2].bias.copy_((seq[2].bias - mean) * gain - 1.2)
    return model


def save(model, path: Path, imgsz: int) -> None:
    from ultralytics import __version__
    from ultralytics.utils.torch_utils import strip_optimizer

    path.parent.mkdir(parents=True, exist_ok=True)
    model.args = {"imgsz": imgsz, "task": "segment"}
    torch.save(
        {
            "epoch": 0,
            "model": model,
            "ema": None,
            "train_args": {"imgsz": imgsz, "task": "segment"},
            "version": __version__,
        },
        path,
    )
    strip_optimizer(path)


def save_legacy(model, path: Path) -> None:
    """Like the 8.0.x releases: ``model.args`` is an IterableSimpleNamespace pickled under the old
    module path ``ultralytics.yolo.utils``; an ``ema`` entry that must win over ``model``."""
    import types

    from ultralytics.utils import IterableSimpleNamespace

    legacy = types.ModuleType("ultralytics.yolo.utils")
    old_ns = type("IterableSimpleNamespace", (IterableSimpleNamespace,), {"__module__": "ultralytics.yolo.utils"})
    legacy.IterableSimpleNamespace = old_ns
    sys.modules.setdefault("ultralytics.yolo", types.ModuleType("ultralytics.yolo"))
    sys.modules["ultralytics.yolo.utils"] = legacy
    decoy = build("s", 16, seed=7).half()  # "model" holds other weights: the loader must take "ema"
    model = model.half()
    model.args = old_ns(imgsz=1024, task="segment")
    decoy.args = old_ns(imgsz=1024, task="segment")
    torch.save(
        {
            "epoch": -1,
            "best_fitness": None,
            "model": decoy,
            "ema": model,
            "updates": 10,
            "optimizer": None,
            "train_args": {"imgsz": 1024},
            "date": "2023-06-21T00:00:00",
            "version": "8.0.120",
        },
        path,
    )


def make(outdir: Path, only_s: bool = False) -> None:
    save(build("s", 16, seed=0), outdir / "FastSAM-s.pt", 640)
    if only_s:
        return
    save(build("x", 26, seed=1), outdir / "FastSAM-x.pt", 1024)
    save_legacy(build("s", 16, seed=0), outdir / "FastSAM-s-legacy.pt")


def _bad_variants(base):
    """name -> FastSAM-n with one layer constant changed, as a modified or differently built model would store it."""
    import copy

    def edit(fn):
        model = copy.deepcopy(base)
        fn(model)
        return model

    def set_attr(path, attr, value):
        return lambda model: setattr(model.get_submodule(path), attr, value)

    def fuse(model):
        model.fuse(verbose=False)  # ultralytics' own Conv+BN fold: the Conv layers lose their BatchNorm

    return {
        "eps-nan": edit(set_attr("model.4.m.0.cv1.bn", "eps", float("nan"))),
        "eps-zero": edit(set_attr("model.0.bn", "eps", 0.0)),
        "eps-negative": edit(set_attr("model.22.proto.cv1.bn", "eps", -1e-3)),
        "eps-inf": edit(set_attr("model.12.cv2.bn", "eps", float("inf"))),
        "eps-string": edit(set_attr("model.3.bn", "eps", "0.001")),
        "pool-kernel": edit(
            lambda m: (set_attr("model.9.m", "kernel_size", 3)(m), set_attr("model.9.m", "padding", 1)(m))
        ),
        "upsample-mode": edit(set_attr("model.13", "mode", "bilinear")),
        "no-activation": edit(set_attr("model.9.cv1", "act", torch.nn.Identity())),
        "conv-dilation": edit(set_attr("model.16.conv", "dilation", (2, 2))),
        "sppf-shortcut": edit(set_attr("model.9", "add", True)),
        "bottleneck-add": edit(set_attr("model.12.m.0", "add", True)),
        "rewired": edit(set_attr("model.11", "f", [-1, 4])),
        "fused": edit(fuse),
    }


def make_eps(outdir: Path) -> None:
    save(build("s", 16, seed=0, eps=EPS_DEFAULT), outdir / "FastSAM-s-eps.pt", 640)
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(3)
    base = SegmentationModel("yolov8n-seg.yaml", nc=1, verbose=False).eval()
    for name, model in _bad_variants(base).items():
        save(model, outdir / f"bad-{name}.pt", 640)


def _letterbox(img_bgr: np.ndarray, imgsz: int) -> torch.Tensor:
    from ultralytics.data.augment import LetterBox

    lb = LetterBox((imgsz, imgsz), auto=True, stride=32)
    im = lb(image=img_bgr)
    im = np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1))
    return torch.from_numpy(im).float().unsqueeze(0) / 255


def original_pipeline(model, img_bgr, imgsz, conf, iou, retina, max_det=300):
    """The original FastSAM post-processing rebuilt from ultralytics' ops: NMS, then border snap and
    full-image box *before* mask assembly, empty masks kept (today's ultralytics departs on both)."""
    from ultralytics.utils import ops
    from ultralytics.utils.nms import non_max_suppression

    x = _letterbox(img_bgr, imgsz)
    with torch.no_grad():
        preds = model(x)
    head, protos = preds[0]  # ultralytics 8.4: ((decoded, protos), raw maps)
    p = non_max_suppression(head, conf, iou, max_det=max_det, nc=1)[0]
    proto = protos[0]
    h_in, w_in = x.shape[2:]
    if len(p):
        snapped = p[:, :4]
        snapped[:, 0][snapped[:, 0] < 20] = 0
        snapped[:, 1][snapped[:, 1] < 20] = 0
        snapped[:, 2][snapped[:, 2] > w_in - 20] = w_in
        snapped[:, 3][snapped[:, 3] > h_in - 20] = h_in
        full = torch.tensor([0.0, 0.0, w_in, h_in])
        from ultralytics.utils.metrics import box_iou

        idx = torch.nonzero(box_iou(full[None], p[:, :4])[0] > 0.9).flatten()
        p[idx, :4] = full  # the original crashes with several; the package sets each to the frame
    h0, w0 = img_bgr.shape[:2]
    if retina:
        p[:, :4] = ops.scale_boxes(x.shape[2:], p[:, :4], (h0, w0))
        masks = ops.process_mask_native(proto, p[:, 6:], p[:, :4], (h0, w0))
    else:
        # Original: crop at prototype resolution, then upsample (today's ultralytics crops after).
        c, mh, mw = proto.shape
        logits = (p[:, 6:] @ proto.float().view(c, -1)).view(-1, mh, mw)
        scale = torch.tensor([mw / w_in, mh / h_in, mw / w_in, mh / h_in])
        logits = ops.crop_mask(logits, p[:, :4] * scale)
        masks = torch.nn.functional.interpolate(logits[None], (h_in, w_in), mode="bilinear", align_corners=False)[0]
        masks = masks.gt(0.0)
        p[:, :4] = ops.scale_boxes(x.shape[2:], p[:, :4], (h0, w0))
    return x, (head, protos), p, masks


def run(ckpt: Path, image: Path, out: Path, imgsz: int, conf: float, iou: float, retina: bool) -> None:
    import cv2
    from ultralytics import FastSAM
    from ultralytics.nn.tasks import load_checkpoint
    from ultralytics.utils import torch_utils

    torch.set_num_threads(2)
    torch_utils.NUM_THREADS = 2
    model, _ = load_checkpoint(str(ckpt), device="cpu", fuse=False)
    model = model.float().eval()
    img = cv2.imread(str(image))
    x, (head, protos), p, masks = original_pipeline(model, img, imgsz, conf, iou, retina)
    fused, _ = load_checkpoint(str(ckpt), device="cpu", fuse=True)  # what ultralytics' predictor runs
    with torch.no_grad():
        head_fused, protos_fused = fused.float().eval()(x)[0]
    res = FastSAM(str(ckpt)).predict(
        str(image), imgsz=imgsz, conf=conf, iou=iou, retina_masks=retina, device="cpu", verbose=False
    )[0]
    np.savez_compressed(
        out,
        input=x.numpy(),
        head=head.numpy(),
        protos=protos.numpy(),
        head_fused=head_fused.numpy(),
        protos_fused=protos_fused.numpy(),
        orig_boxes=p[:, :4].numpy(),
        orig_scores=p[:, 4].numpy(),
        orig_masks=masks.numpy().astype(bool),
        ul_boxes=res.boxes.xyxy.numpy() if res.boxes is not None else np.zeros((0, 4)),
        ul_scores=res.boxes.conf.numpy() if res.boxes is not None else np.zeros((0,)),
        ul_masks=res.masks.data.numpy().astype(bool) if res.masks is not None else np.zeros((0, 1, 1), bool),
    )


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("outdir", type=Path)
    m.add_argument("--only-s", action="store_true", help="only FastSAM-s.pt")
    sub.add_parser("make-eps").add_argument("outdir", type=Path)
    r = sub.add_parser("run")
    r.add_argument("ckpt", type=Path)
    r.add_argument("image", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--imgsz", type=int, default=1024)
    r.add_argument("--conf", type=float, default=0.4)
    r.add_argument("--iou", type=float, default=0.9)
    r.add_argument("--no-retina", action="store_true")
    a = ap.parse_args(argv)
    if a.cmd == "make":
        make(a.outdir, a.only_s)
    elif a.cmd == "make-eps":
        make_eps(a.outdir)
    else:
        run(a.ckpt, a.image, a.out, a.imgsz, a.conf, a.iou, not a.no_retina)


if __name__ == "__main__":
    main(sys.argv[1:])
