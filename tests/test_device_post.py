"""The device post-processing path (fastsam.ops.device_post), forced on CPU tensors, against the
C-kernel path: same detections, boxes and scores, the same masks up to float rounding of the logits
GEMM (each IoU >= 0.99, stability within 1e-3); its NMS against torchvision's; ``post=``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastsam import FastSAM, PredictConfig
from fastsam.errors import FastSAMError
from fastsam.io.images import load_image
from fastsam.ops.boxes import MAX_NMS_CANDIDATES
from fastsam.ops.device_nms import CLASS_OFFSET, iou_threshold32, nms, select_batched
from fastsam.ops.device_post import postprocess_batch
from fastsam.ops.letterbox import Letterbox, letterbox
from fastsam.predictor import CLASS_OFFSET as PREDICTOR_CLASS_OFFSET
from fastsam.predictor import select_detections
from fastsam.results import Segments


def _assert_same(ref: Segments, got: Segments) -> None:
    assert len(got) == len(ref) > 0
    np.testing.assert_array_equal(got.boxes, ref.boxes)
    np.testing.assert_array_equal(got.scores, ref.scores)
    np.testing.assert_array_equal(got.regions, ref.regions)
    np.testing.assert_allclose(got.stability, ref.stability, atol=1e-3, rtol=0)
    for a, b in zip(ref.crops, got.crops):
        assert a.shape == b.shape and b.dtype == np.bool_
        union = (a | b).sum()
        assert union == 0 or (a & b).sum() / union >= 0.99


@pytest.fixture(scope="module")
def photos(ultra_assets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ultralytics' two photos at a third of their size: retina masks cost their pixel count on a CPU."""
    out = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("zidane.jpg", "bus.jpg"):
        im = Image.open(ultra_assets / name)
        paths[name] = out / name
        im.resize((im.width // 3, im.height // 3), Image.BILINEAR).save(paths[name])
    return paths


CASES = {  # checkpoint, photo, imgsz, retina
    "s-zidane-retina": ("FastSAM-s.pt", "zidane.jpg", 640, True),
    "s-bus-input-frame": ("FastSAM-s.pt", "bus.jpg", 640, False),
    "x-bus-retina": ("FastSAM-x.pt", "bus.jpg", 640, True),
    "x-zidane-input-frame": ("FastSAM-x.pt", "zidane.jpg", 512, False),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_device_path_gives_the_kernel_masks(case: str, ultra_ckpts: Path, photos: dict[str, Path]) -> None:
    ckpt, photo, imgsz, retina = CASES[case]
    kernels = FastSAM(ultra_ckpts / ckpt, post="kernels", cache_size=0)
    device = FastSAM(kernels.network, post="device", cache_size=0, fuse=False, channels_last=True)
    assert (kernels.post, device.post, device.provenance["post"]) == ("kernels", "device", "device")
    cfg = PredictConfig(imgsz=imgsz, retina_masks=retina)
    x, geom = letterbox(load_image(photos[photo]), cfg.input_size, cfg.stride)
    preds, protos = kernels.forward(x)
    ref = kernels.postprocess(preds[0], protos[0], geom, cfg)
    assert len(ref) >= 200  # random weights: many candidates
    _assert_same(ref, device.postprocess(preds[0], protos[0], geom, cfg))
    small = PredictConfig(imgsz=imgsz, retina_masks=retina, max_det=7, iou=0.5)
    _assert_same(
        kernels.postprocess(preds[0], protos[0], geom, small), device.postprocess(preds[0], protos[0], geom, small)
    )
    if case == "s-zidane-retina":  # through the whole call, and no detection at all
        _assert_same(kernels(photos[photo], imgsz=imgsz), device(photos[photo], imgsz=imgsz))
        none = PredictConfig(imgsz=imgsz, conf=1.0)
        assert len(device.postprocess(preds[0], protos[0], geom, none)) == 0
        assert device.postprocess(preds[0], protos[0], geom, none).image_size == geom.orig_size


def test_a_batch_gives_each_image_its_own_result() -> None:
    """Two images of different original sizes in one letterboxed batch, random predictions."""
    gen = torch.Generator().manual_seed(0)
    geoms = [
        Letterbox((200, 300), (224, 320), (213, 320), (5, 0)),
        Letterbox((150, 160), (224, 320), (224, 239), (0, 40)),
    ]
    a = 28 * 40 + 14 * 20 + 7 * 10
    preds = torch.cat(
        (
            torch.rand(2, 2, a, generator=gen) * torch.tensor([320.0, 224.0])[None, :, None],
            torch.rand(2, 2, a, generator=gen) * 60 + 4,
            torch.rand(2, 1, a, generator=gen),
            torch.randn(2, 32, a, generator=gen),
        ),
        1,
    )
    protos = torch.randn(2, 32, 56, 80, generator=gen)
    model = FastSAM(post="device")  # the demo model's config: one class, 32 prototypes
    kernels = FastSAM(post="kernels")
    for retina in (True, False):
        out = postprocess_batch(preds, protos, geoms, 1, 0.4, 0.7, 50, retina).to_host()
        for i, geom in enumerate(geoms):
            cfg = PredictConfig(imgsz=320, iou=0.7, max_det=50, retina_masks=retina)
            kern = kernels.postprocess(preds[i], protos[i], geom, cfg)
            got = Segments.from_crops(geom.orig_size, out[i].boxes, out[i].scores, out[i].crops)
            _assert_same(kern, got)
            _assert_same(kern, model.postprocess(preds[i], protos[i], geom, cfg))


def _random_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * 100
    wh = torch.rand(n, 2, generator=gen) * 40
    boxes = torch.cat((xy, xy + wh), 1)
    boxes[::7] = boxes[1::7][: len(boxes[::7])] if n > 8 else boxes[::7]  # duplicated boxes
    boxes[5, 2:] = boxes[5, :2]  # a zero-area box (0 / 0 IoU with its twin)
    scores = (torch.rand(n, generator=gen) * 10).floor() / 10  # many ties
    return boxes, scores


@pytest.mark.parametrize("iou", [0.0, 0.1, 0.5, 0.7, 0.9, 1.0])
def test_nms_equals_torchvision(iou: float) -> None:
    from torchvision.ops import nms as tv_nms

    for seed, n in ((0, 600), (1, 40), (2, 900)):
        boxes, scores = _random_boxes(n, seed)
        expected = tv_nms(boxes, scores, iou)
        got = nms(boxes, scores, iou)
        assert got.dtype == torch.int64
        assert torch.equal(got, expected), (seed, iou)
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_iou_threshold32_compares_as_a_double() -> None:
    for t in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0, 1 / 3):
        f = np.float32(iou_threshold32(t))
        near = np.array([np.nextafter(f, -1), f, np.nextafter(f, 2), np.float32(t)], dtype=np.float32)
        assert ((near > f) == (near.astype(np.float64) > t)).all(), t


def test_more_candidates_than_nms_takes() -> None:
    """Over MAX_NMS_CANDIDATES boxes above conf: the best-scored ones are kept, as on the CPU path."""
    n = MAX_NMS_CANDIDATES + 1500
    gen = torch.Generator().manual_seed(3)
    scores = torch.randperm(n, generator=gen).float() / n * 0.5 + 0.45  # distinct, all but a few > 0.45
    xy = torch.rand(2, n, generator=gen) * 1000
    preds = torch.cat((xy, torch.full((2, n), 6.0), scores[None], torch.randn(4, n, generator=gen)))
    cfg = PredictConfig(conf=0.45, iou=0.3, max_det=600)
    ref = select_detections(preds, 1, cfg)
    det = select_batched(preds[None], 1, cfg.conf, cfg.iou, cfg.max_det)
    k = int(det.counts[0])
    assert k == ref.boxes.shape[0] == 600
    assert torch.equal(det.boxes[0, :k], ref.boxes) and torch.equal(det.scores[0, :k], ref.scores)
    assert torch.equal(det.coefficients[0, :k], ref.coefficients)
    assert float(det.scores[0, :k].min()) > float(torch.sort(scores, descending=True).values[MAX_NMS_CANDIDATES])
    assert CLASS_OFFSET == PREDICTOR_CLASS_OFFSET


def test_post_is_validated() -> None:
    with pytest.raises(FastSAMError, match=r"^post must be one of auto, kernels, device; got 'gpu'$"):
        FastSAM(post="gpu")
    auto = FastSAM()
    assert (auto.post, auto.post_mode, auto.provenance["post"]) == ("kernels", "auto", "kernels")


def test_half_on_torch_stays_refused_on_the_cpu() -> None:
    with pytest.raises(FastSAMError, match="half precision is offered on the openvino backend"):
        FastSAM(half=True)
