"""BatchNorm eps is read per layer from released-format checkpoints and survives every path.

ultralytics runs each BatchNorm with the eps its pickle stores; YOLOv8 uses 1e-3, but a checkpoint
trained otherwise carries another value (here 1e-5, with two layers at yet other values). fastsam must
give the same outputs from the ``.pt``, from the BatchNorm-fused network, and from the safetensors file
``convert`` writes (``bn_eps`` metadata). What the network cannot represent (another pooling kernel,
upsampling mode, activation, conv dilation, residual add, layer wiring, a fused file without
BatchNorm, a non-finite or non-positive eps) is refused with a CheckpointError naming the layer and the value.

The ultralytics side runs in subprocesses (tests/reference/ultra_ref.py), as in test_parity.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REFERENCE, run_script
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_parity import _match

from fastsam import FastSAM, build_model, convert, load_model
from fastsam.errors import CheckpointError, UnsafeCheckpointError
from fastsam.io.checkpoint import read_weights, save_safetensors
from fastsam.nn.blocks import BN_EPS
from fastsam.nn.fuse import fuse_conv_bn
from fastsam.nn.model import batchnorm_eps, set_batchnorm_eps

EPS_DEFAULT = 1e-5
EPS_LAYERS = {"backbone.stem.bn": 1e-4, "head.coef_branch.1.conv2.bn": 0.05}  # ultra_ref.EPS_LAYERS, our names


# -- checkpoints written by ultralytics --------------------------------------------------------------
@pytest.fixture(scope="module")
def eps_ckpts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eps-ckpts")
    run_script([str(REFERENCE / "ultra_ref.py"), "make-eps", str(out)], out)
    return out


@pytest.fixture(scope="module")
def eps_case(eps_ckpts: Path, ultra_assets: Path):
    """ultralytics' outputs on bus.jpg at 640, and ours from the .pt and from its safetensors conversion."""
    pt = eps_ckpts / "FastSAM-s-eps.pt"
    st = convert(pt, eps_ckpts / "FastSAM-s-eps.safetensors")
    image, flags = str(ultra_assets / "bus.jpg"), ["--imgsz", "640", "--conf", "0.4", "--iou", "0.9"]
    ref = eps_ckpts / "ref.npz"
    run_script([str(REFERENCE / "ultra_ref.py"), "run", str(pt), image, str(ref), *flags], eps_ckpts)
    ours = {}
    for kind, path in (("pt", pt), ("safetensors", st)):
        out = eps_ckpts / f"ours-{kind}.npz"
        run_script([str(REFERENCE / "ours_run.py"), str(path), image, str(ref), str(out), *flags], eps_ckpts)
        o = dict(np.load(out))
        w = int(o["image_size"][1])
        for tag in ("plain", "fused"):
            o[f"{tag}_masks"] = np.unpackbits(o[f"{tag}_masks"], axis=-1, count=w).astype(bool)
        ours[kind] = o
    return {"pt": pt, "safetensors": st, "ref": dict(np.load(ref)), "ours": ours}


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
@pytest.mark.parity
@pytest.mark.slow
def test_eps_is_read_per_layer(eps_case, kind):
    """Every BatchNorm gets the checkpoint's eps; the safetensors field is compact (default + exceptions)."""
    weights = read_weights(eps_case[kind])
    names = {k[: -len(".running_var")] for k in weights.state if k.endswith(".running_var")}
    assert weights.bn_eps == {name: EPS_LAYERS.get(name, EPS_DEFAULT) for name in names}
    model = load_model(eps_case[kind])
    assert {n: m.eps for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)} == weights.bn_eps
    if kind == "safetensors":
        with safe_open(str(eps_case[kind]), framework="pt") as fh:
            field = json.loads(fh.metadata()["bn_eps"])
        assert field == {"default": EPS_DEFAULT, "layers": EPS_LAYERS}


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
@pytest.mark.parity
@pytest.mark.slow
def test_eps_raw_outputs_match_ultralytics(eps_case, kind):
    """Raw head and prototypes agree with ultralytics to test_parity's tolerances, plain and fused."""
    r, o = eps_case["ref"], eps_case["ours"][kind]
    for tag, suffix, tol in (("plain", "", 1e-5), ("fused", "_fused", 1e-3)):
        for key in ("head", "protos"):
            ref, ours = r[key + suffix], o[f"{tag}_{key}"]
            assert ours.shape == ref.shape
            rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
            print(f"{kind} {tag} {key}: relative {rel:.2e}, max abs {np.abs(ours - ref).max():.3g}")
            assert rel <= tol, f"{kind} {tag} {key}: relative error {rel:.2e}"


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
@pytest.mark.parity
@pytest.mark.slow
def test_eps_everything_mode_matches_original_pipeline(eps_case, kind):
    """Same detections and masks as the original pipeline, plain network exactly, fused up to near ties."""
    r, o = eps_case["ref"], eps_case["ours"][kind]
    n = len(r["orig_scores"])
    assert n >= 50, f"the random checkpoint should give many masks, got {n}"
    assert len(o["plain_scores"]) == n
    np.testing.assert_allclose(o["plain_scores"], r["orig_scores"], rtol=1e-5)
    pairs = _match(o["plain_boxes"], o["plain_masks"], r["orig_boxes"], r["orig_masks"])
    assert len(pairs) == n
    assert min(p[2] for p in pairs) >= 0.99
    assert max(np.abs(o["plain_boxes"][i] - r["orig_boxes"][j]).max() for i, j, _ in pairs) <= 1.0
    assert abs(len(o["fused_scores"]) - n) <= 1
    fused = _match(o["fused_boxes"], o["fused_masks"], r["orig_boxes"], r["orig_masks"])
    assert len(fused) >= 0.99 * n
    assert np.mean(np.array([p[2] for p in fused]) >= 0.99) >= 0.99


@pytest.mark.parity
@pytest.mark.slow
def test_eps_values_matter(eps_case):
    """The comparison above can fail: YOLOv8's eps, or the default without the two exceptions, is far off."""
    r = eps_case["ref"]
    model = FastSAM(eps_case["pt"], fuse=False, cache_size=0)
    x = torch.from_numpy(r["input"])
    names = [n for n, m in model.network.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for wrong in ({n: BN_EPS for n in names}, dict.fromkeys(EPS_LAYERS, EPS_DEFAULT)):
        set_batchnorm_eps(model.network, wrong)
        _, protos = model.forward(x)
        rel = np.linalg.norm(protos.numpy() - r["protos"]) / np.linalg.norm(r["protos"])
        assert rel > 1e-3, f"eps {sorted(set(wrong.values()))}: relative error only {rel:.2e}"


BAD = {  # variant written by ultra_ref.py -> (ultralytics layer, value) the refusal must name
    "eps-nan": ("model.4.m.0.cv1.bn", "eps nan"),
    "eps-zero": ("model.0.bn", "eps 0.0"),
    "eps-negative": ("model.22.proto.cv1.bn", "eps -0.001"),
    "eps-inf": ("model.12.cv2.bn", "eps inf"),
    "eps-string": ("model.3.bn", "eps '0.001'"),
    "pool-kernel": ("model.9.m", "kernel_size 3"),
    "upsample-mode": ("model.13", "mode 'bilinear'"),
    "no-activation": ("model.9.cv1.act", "Identity"),
    "conv-dilation": ("model.16.conv", "dilation (2, 2)"),
    "sppf-shortcut": ("model.9", "residual add True"),
    "bottleneck-add": ("model.12.m.0", "residual add True"),
    "rewired": ("model.11", "[-1, 4]"),
    "fused": ("model.0.bn", "missing"),
}


@pytest.mark.parametrize("variant", sorted(BAD))
@pytest.mark.parity
@pytest.mark.slow
def test_unrepresentable_constants_refused(eps_ckpts, tmp_path, variant):
    """One-line CheckpointError naming file, layer and value, for loading and converting alike."""
    layer, value = BAD[variant]
    path = eps_ckpts / f"bad-{variant}.pt"
    for attempt in (lambda: FastSAM(path), lambda: convert(path, tmp_path / "out.safetensors")):
        with pytest.raises(CheckpointError) as info:
            attempt()
        msg = str(info.value)
        assert not isinstance(info.value, UnsafeCheckpointError) and "\n" not in msg
        assert path.name in msg and f" {layer} " in msg and value in msg, msg
    assert not (tmp_path / "out.safetensors").exists()


# -- our own files (no ultralytics) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def varied_net():
    """FastSAM-n with eps 1e-5, two layers at other values, and BatchNorm statistics calibrated on
    random images (so that activations stay in range and small variances make eps matter)."""
    torch.manual_seed(0)
    net = build_model("n")
    names = [n for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    set_batchnorm_eps(net, {**dict.fromkeys(names, EPS_DEFAULT), **EPS_LAYERS})
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration pass
    with torch.no_grad():
        net.train()(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    return net.eval()


def test_fuse_folds_each_layers_eps(varied_net):
    """Fusing keeps the outputs of a network with per-layer eps (and YOLOv8's eps would not)."""
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fused_net = fuse_conv_bn(varied_net)
        assert batchnorm_eps(fused_net) == {}  # folded away with the BatchNorms
        plain, fused = varied_net(x).protos, fused_net(x).protos
        assert (fused - plain).norm() / plain.norm() <= 1e-5
        other = build_model("n").eval()
        other.load_state_dict(varied_net.state_dict())  # same tensors, YOLOv8's eps
        assert (fuse_conv_bn(other)(x).protos - plain).norm() / plain.norm() > 1e-3


def test_safetensors_records_eps_and_reload_matches(varied_net, tmp_path):
    path = save_safetensors(
        varied_net.state_dict(), varied_net.config, tmp_path / "n.safetensors", bn_eps=batchnorm_eps(varied_net)
    )
    with safe_open(str(path), framework="pt") as fh:
        assert json.loads(fh.metadata()["bn_eps"]) == {"default": EPS_DEFAULT, "layers": EPS_LAYERS}
    back = load_model(path)
    assert batchnorm_eps(back) == batchnorm_eps(varied_net)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(back(x).protos, varied_net(x).protos)


def test_safetensors_without_field_means_yolov8_eps(tmp_path):
    net = build_model("n")
    path = save_safetensors(net.state_dict(), net.config, tmp_path / "n.safetensors", bn_eps={})
    with safe_open(str(path), framework="pt") as fh:
        assert "bn_eps" not in fh.metadata()
    model = load_model(path)
    assert all(m.eps == BN_EPS for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    uniform = save_safetensors(
        net.state_dict(),
        net.config,
        tmp_path / "u.safetensors",
        bn_eps={n: 1e-5 for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)},
    )
    with safe_open(str(uniform), framework="pt") as fh:
        assert json.loads(fh.metadata()["bn_eps"]) == {"default": 1e-5}  # one value when all layers agree


@pytest.mark.parametrize(
    "field,named",
    [
        ('{"default": NaN}', "nan"),
        ('{"default": 0}', "0"),
        ('{"layers": {"backbone.stem.bn": -1e-05}}', "backbone.stem.bn"),
        ('{"layers": {"backbone.stem.bn": "1e-5"}}', "backbone.stem.bn"),
        ('{"layers": {"backbone.stem.conv": 1e-05}}', "backbone.stem.conv"),
        ('{"default": 1e-05, "scale": 2}', "bn_eps"),
        ("[1e-05]", "bn_eps"),
        ("1e-05", "bn_eps"),
        ("{", "bn_eps"),
    ],
)
def test_invalid_eps_metadata_refused(tmp_path, field, named):
    net = build_model("n")
    good = save_safetensors(net.state_dict(), net.config, tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as fh:
        meta = dict(fh.metadata())
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(good)), str(bad), metadata={**meta, "bn_eps": field})
    with pytest.raises(CheckpointError) as info:
        load_model(bad)
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and named in msg.lower(), msg


@pytest.mark.parametrize("eps", [math.nan, math.inf, 0.0, -1e-3, True, "1e-3"])
def test_set_batchnorm_eps_and_save_refuse_bad_values(eps, tmp_path):
    net = build_model("n")
    with pytest.raises(ValueError, match=r"backbone\.stem\.bn"):
        set_batchnorm_eps(net, {"backbone.stem.bn": eps})
    with pytest.raises(CheckpointError, match=r"backbone\.stem\.bn"):
        save_safetensors(net.state_dict(), net.config, tmp_path / "x.safetensors", bn_eps={"backbone.stem.bn": eps})
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(KeyError):
        set_batchnorm_eps(net, {"backbone.stem.conv": 1e-5})
