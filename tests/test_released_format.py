"""Checkpoints in the released format, as ultralytics writes them (8.0.x class paths included)."""

from __future__ import annotations

import torch

from fastsam import ModelConfig, convert, load_model
from fastsam.io.checkpoint import read_weights


def test_fastsam_s_and_x_architectures_are_derived_from_shapes(ultra_ckpts):
    s = read_weights(ultra_ckpts / "FastSAM-s.pt")
    x = read_weights(ultra_ckpts / "FastSAM-x.pt")
    assert s.config == ModelConfig(scale="s", num_classes=1, num_masks=32, reg_max=16)
    assert x.config == ModelConfig(scale="x", num_classes=1, num_masks=32, reg_max=26)
    assert s.provenance["source_dtype"] == "float16"  # strip_optimizer stores fp16
    assert s.provenance["train_args"]["imgsz"] == 640
    assert all(v.dtype == torch.float16 for k, v in s.state.items() if v.is_floating_point())


def test_legacy_class_paths_and_ema_wins(ultra_ckpts):
    """An 8.0.x-style file: ``ultralytics.yolo.utils.IterableSimpleNamespace`` args and an ``ema``
    entry next to a different ``model``: the EMA weights are the ones loaded."""
    legacy = read_weights(ultra_ckpts / "FastSAM-s-legacy.pt")
    plain = read_weights(ultra_ckpts / "FastSAM-s.pt")
    assert legacy.provenance["ultralytics_version"] == "8.0.120"
    assert legacy.state.keys() == plain.state.keys()
    assert all(torch.equal(legacy.state[k], plain.state[k]) for k in plain.state)


def test_convert_round_trip_is_lossless(ultra_ckpts, tmp_path):
    src = ultra_ckpts / "FastSAM-s.pt"
    dst = convert(src, tmp_path / "s.safetensors")
    a, b = load_model(src), load_model(dst)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    meta = read_weights(dst).provenance
    assert meta["converted_from"] == "FastSAM-s.pt" and meta["source_format"] == "ultralytics"
    assert dst.stat().st_size < src.stat().st_size  # fp16 tensors, no pickled modules
