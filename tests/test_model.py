"""Network structure, parameter counts, BN fusion and decoding."""

from __future__ import annotations

import pytest
import torch

from fastsam import ModelConfig, build_model
from fastsam.nn.fuse import fuse_conv_bn
from fastsam.nn.model import FastSAMNet
from fastsam.ops.decode import decode_predictions, dfl_expectation, make_anchors


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_fastsam_s_parameter_count_equals_ultralytics():
    """yolov8s-seg with nc=1: ultralytics counts 11,790,483 parameters, 16 of them its fixed DFL conv
    (we keep the DFL projection as a constant, not a parameter)."""
    assert n_params(build_model("s")) + 16 == 11_790_483


def test_fastsam_x_fused_parameter_count_equals_released_file():
    """The released FastSAM-x.pt reports 72,203,813 parameters fused (FastSAM issue #142): yolov8x-seg,
    one class, reg_max 26 — this pins both the x scale and the reg_max-26 head."""
    fused = fuse_conv_bn(build_model("x", reg_max=26))
    assert n_params(fused) + 26 == 72_203_813


@pytest.mark.parametrize(
    "scale,stem,p5", [("n", 16, 256), ("s", 32, 512), ("m", 48, 576), ("l", 64, 512), ("x", 80, 640)]
)
def test_scale_table_widths(scale, stem, p5):
    with torch.device("meta"):
        m = FastSAMNet(ModelConfig(scale=scale))
    assert m.backbone.stem.conv.out_channels == stem
    assert m.backbone.sppf.project.conv.out_channels == p5


def test_output_shapes_and_anchor_count():
    m = build_model("n", num_masks=8, reg_max=10).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        out = m(x)
    assert [tuple(t.shape) for t in out.box_logits] == [(2, 40, 8, 12), (2, 40, 4, 6), (2, 40, 2, 3)]
    assert [tuple(t.shape) for t in out.cls_logits] == [(2, 1, 8, 12), (2, 1, 4, 6), (2, 1, 2, 3)]
    assert tuple(out.coefficients.shape) == (2, 8, 96 + 24 + 6)
    assert tuple(out.protos.shape) == (2, 8, 16, 24)
    preds = decode_predictions(out, m.strides, 10)
    assert tuple(preds.shape) == (2, 4 + 1 + 8, 126)
    assert ((preds[:, 4] >= 0) & (preds[:, 4] <= 1)).all()


def test_fused_network_matches_unfused():
    torch.manual_seed(0)
    m = build_model("n").eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.1)
    f = fuse_conv_bn(m)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in f.modules())
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        a, b = m(x), f(x)
    for ta, tb in zip(
        [*a.box_logits, *a.cls_logits, a.coefficients, a.protos],
        [*b.box_logits, *b.cls_logits, b.coefficients, b.protos],
    ):
        assert torch.allclose(ta, tb, rtol=1e-4, atol=1e-4)


def test_anchors_are_cell_centres_level_by_level():
    points, strides = make_anchors([(2, 3), (1, 2)], (8, 16), torch.device("cpu"))
    expected = [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5], [0.5, 0.5], [1.5, 0.5]]
    assert points.tolist() == expected
    assert strides.view(-1).tolist() == [8] * 6 + [16] * 2


def test_dfl_expectation_of_one_hot_bins():
    reg_max = 5
    logits = torch.full((1, 4 * reg_max, 1), -1e4)
    for side, bin_ in enumerate([0, 1, 3, 4]):  # l, t, r, b distances
        logits[0, side * reg_max + bin_, 0] = 1e4
    assert dfl_expectation(logits, reg_max).view(-1).tolist() == [0.0, 1.0, 3.0, 4.0]
    # uniform bins -> mean of 0..reg_max-1
    assert torch.allclose(dfl_expectation(torch.zeros(1, 4 * reg_max, 1), reg_max), torch.full((1, 4, 1), 2.0))


def test_fuse_copy_leaves_the_original_and_inplace_does_not():
    m = build_model("n").eval()
    copy_ = fuse_conv_bn(m)
    assert copy_ is not m and isinstance(m.backbone.stem.bn, torch.nn.BatchNorm2d)
    same = fuse_conv_bn(m, inplace=True)
    assert same is m and isinstance(m.backbone.stem.bn, torch.nn.Identity)
