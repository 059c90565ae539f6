"""Weight files: malicious pickles are refused without running anything, unreadable files give one-line
CheckpointErrors naming the path, loading is strict, and the ultralytics key map is exact."""

from __future__ import annotations

import builtins
import importlib
import io
import os
import pickle
import random
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import fastsam
from fastsam import build_model
from fastsam.config import SCALES, ModelConfig
from fastsam.errors import CheckpointError, UnsafeCheckpointError
from fastsam.io import safe_pickle
from fastsam.io.checkpoint import load_model, load_state_strict, read_weights, save_safetensors
from fastsam.io.ultralytics import DFL_KEY, from_ultralytics, infer_config, key_map, to_ultralytics
from fastsam.nn.model import FastSAMNet

FORMATS = ["torch-zip", "torch-legacy", "pickle-p2", "pickle-p4"]


@pytest.fixture(scope="module")
def net() -> FastSAMNet:
    torch.manual_seed(0)
    return build_model("n").eval()


def _write(obj, path: Path, fmt: str) -> Path:
    if fmt == "torch-zip":
        torch.save(obj, path)
    elif fmt == "torch-legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        with path.open("wb") as fh:
            pickle.dump(obj, fh, protocol=int(fmt[-1]))
    return path


def _one_line_error(exc: BaseException) -> str:
    msg = str(exc)
    assert msg.strip() and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


class Evil:
    def __init__(self, reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def _payloads(marker: Path, victim: Path) -> dict[str, tuple[tuple, str]]:
    """name -> (__reduce__ value, word the refusal must name)."""
    write = f"open({str(marker)!r}, 'w').write('x')"
    return {
        "os.system": ((os.system, ("touch " + str(marker),)), "system"),
        "eval": ((builtins.eval, (write,)), "eval"),
        "exec": ((builtins.exec, (write,)), "exec"),
        "Popen": ((subprocess.Popen, (["touch", str(marker)],)), "Popen"),
        "os.remove": ((os.remove, (str(victim),)), "remove"),
        "import_module": ((importlib.import_module, ("os",)), "import_module"),
        "getattr-gadget": ((getattr, (torch._utils._rebuild_tensor_v2, "__globals__")), "getattr"),
    }


PAYLOADS = list(_payloads(Path("m"), Path("v")))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", PAYLOADS)
def test_malicious_pickle_refused_and_never_runs(tmp_path, name, fmt):
    """read_weights, load_model and convert refuse the payload by name; nothing it asks for happens."""
    marker, victim, dst = tmp_path / "marker", tmp_path / "victim", tmp_path / "out.safetensors"
    victim.write_text("keep me")
    reduce, word = _payloads(marker, victim)[name]
    path = _write({"model": Evil(reduce), "version": "8.0.0"}, tmp_path / "evil.pt", fmt)
    for entry in (read_weights, load_model, lambda p: fastsam.convert(p, dst)):
        with pytest.raises(UnsafeCheckpointError) as info:
            entry(path)
        msg = _one_line_error(info.value)
        assert word in msg and "refusing" in msg
    if name == "Popen":
        time.sleep(0.3)  # a spawned `touch` would have finished by now
    assert not marker.exists()
    assert victim.read_text() == "keep me"
    assert not dst.exists() and not dst.with_name(dst.name + ".tmp").exists()


@pytest.mark.parametrize("name", ["os.system", "eval", "exec", "os.remove"])
def test_payloads_are_live_under_plain_pickle(tmp_path, name):
    """Control: the same payloads do their damage with the standard unpickler (so the test above can fail)."""
    marker, victim = tmp_path / "marker", tmp_path / "victim"
    victim.write_text("keep me")
    reduce, _ = _payloads(marker, victim)[name]
    pickle.loads(pickle.dumps({"model": Evil(reduce)}, protocol=4))
    assert marker.exists() or not victim.exists()  # the payload did its damage


def _gadget(builtins_name: str) -> bytes:
    """Hand-written protocol-2 pickle: getattr(getattr(_rebuild_tensor_v2, "__globals__"), "__getitem__")("torch")."""

    text = lambda s: b"X" + len(s).to_bytes(4, "little") + s.encode()  # noqa: E731 - BINUNICODE
    getattr_ = b"c%s\ngetattr\n" % builtins_name.encode()
    fn = b"ctorch._utils\n_rebuild_tensor_v2\n"
    globals_ = getattr_ + b"(" + fn + text("__globals__") + b"tR"
    getitem = getattr_ + b"(" + globals_ + text("__getitem__") + b"tR"
    return b"\x80\x02" + getitem + b"(" + text("torch") + b"tR."


@pytest.mark.parametrize("builtins_name", ["builtins", "__builtin__"])
def test_handwritten_getattr_gadget_refused(tmp_path, builtins_name):
    """A getattr chain from an allowed torch function to its module globals is refused at the first step."""
    data = _gadget(builtins_name)
    assert pickle.loads(data) is torch  # the gadget works under the standard unpickler
    (tmp_path / "gadget.pt").write_bytes(data)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_weights(tmp_path / "gadget.pt")
    msg = _one_line_error(info.value)
    assert "getattr" in msg and "__globals__" in msg
    with pytest.raises(UnsafeCheckpointError):
        safe_pickle.loads(data)


BUILD_TARGETS = [
    pytest.param("torch._utils", "_rebuild_tensor_v2", {"__defaults__": (7,)}, id="rebuild_tensor_v2-defaults"),
    pytest.param("torch._utils", "_rebuild_tensor_v2", {"pwned": 1}, id="rebuild_tensor_v2-attr"),
    pytest.param("builtins", "getattr", {"pwned": 1}, id="getattr-attr"),
    pytest.param("pathlib", "PosixPath", {"pwned": 1}, id="pathlib-attr"),
    pytest.param("torch", "Tensor", {"pwned": 1}, id="Tensor-attr"),
    pytest.param("ultralytics.nn.tasks", "SegmentationModel", {"pwned": 1}, id="inert-class-attr"),
]


@pytest.mark.parametrize("module,name,slots", BUILD_TARGETS)
def test_pickle_cannot_modify_allowed_globals(tmp_path, module, name, slots):
    """BUILD on an allow-listed global must not change it for the rest of the process."""
    target = safe_pickle.Unpickler(io.BytesIO()).find_class(module, name)
    defaults, attrs = getattr(target, "__defaults__", None), dict(vars(target))
    data = b"\x80\x02c%s\n%s\n" % (module.encode(), name.encode())
    data += pickle.dumps((None, slots), protocol=2)[2:-1] + b"b0}."  # BUILD (None, slots); POP; {}
    path = tmp_path / "tamper.pt"
    path.write_bytes(data)
    try:
        with pytest.raises(CheckpointError) as info:
            read_weights(path)
        _one_line_error(info.value)
        assert getattr(target, "__defaults__", None) == defaults
        assert dict(vars(target)) == attrs
    finally:  # undo any tampering so later tests are unaffected
        if isinstance(target, types.FunctionType):
            target.__defaults__ = defaults
            for key in set(vars(target)) - set(attrs):
                delattr(target, key)
        elif "pwned" in vars(target):
            delattr(target, "pwned")


def _zip_not_torch(p: Path) -> None:
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("readme.txt", "hello")


def _truncated(p: Path, net: FastSAMNet, how: str) -> None:
    full = p.with_name("full")
    if how == "safetensors":
        save_safetensors(net.state_dict(), net.config, full)
    else:
        torch.save(to_ultralytics(net), full, _use_new_zipfile_serialization=how == "zip")
    data = full.read_bytes()
    p.write_bytes(data[: len(data) // 2])


UNREADABLE = {
    "missing": lambda p, net: None,
    "directory": lambda p, net: p.mkdir(),
    "empty": lambda p, net: p.write_bytes(b""),
    "random": lambda p, net: p.write_bytes(random.Random(0).randbytes(4096)),
    "random-after-pickle-header": lambda p, net: p.write_bytes(b"\x80\x02" + random.Random(1).randbytes(4096)),
    "random-after-zip-header": lambda p, net: p.write_bytes(b"PK\x03\x04" + random.Random(2).randbytes(4096)),
    "random-after-safetensors-header": lambda p, net: p.write_bytes(b"\x40\0\0\0\0\0\0\0{" + bytes(100)),
    "text": lambda p, net: p.write_text("these are not the weights you are looking for\n" * 20),
    "png": lambda p, net: Image.new("RGB", (8, 8), (255, 0, 0)).save(p, format="PNG"),
    "zip-not-torch": lambda p, net: _zip_not_torch(p),
    "truncated-zip-checkpoint": lambda p, net: _truncated(p, net, "zip"),
    "truncated-legacy-checkpoint": lambda p, net: _truncated(p, net, "legacy"),
    "truncated-safetensors": lambda p, net: _truncated(p, net, "safetensors"),
    "torch-file-holding-a-tensor": lambda p, net: torch.save(torch.zeros(3), p),
    "torch-file-holding-a-foreign-state-dict": lambda p, net: torch.save({"fc.weight": torch.zeros(2, 2)}, p),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_file_gives_one_line_checkpoint_error(tmp_path, net, case):
    """Exactly CheckpointError (not Unsafe..., not another type), one line, naming the path."""
    path = tmp_path / "weights.pt"
    UNREADABLE[case](path, net)
    for entry in (read_weights, load_model):
        with pytest.raises(CheckpointError) as info:
            entry(path)
        assert type(info.value) is CheckpointError
        assert str(path) in _one_line_error(info.value)


def test_fastsam_safetensors_round_trip(tmp_path, net):
    """save_safetensors + load_model reproduces every tensor and the network's outputs."""
    path = save_safetensors(net.state_dict(), net.config, tmp_path / "n.safetensors")
    loaded = load_model(path)
    assert loaded.config == net.config
    own, back = net.state_dict(), loaded.state_dict()
    assert set(own) == set(back)
    for key in own:
        assert torch.equal(own[key], back[key]), key
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = net(x), loaded(x)
    assert out.protos.shape[:2] == (1, net.config.num_masks) and torch.isfinite(out.protos).all()
    assert torch.equal(ref.coefficients, out.coefficients) and torch.equal(ref.protos, out.protos)
    dst = fastsam.convert(path, tmp_path / "copy.safetensors")  # positive control for the convert checks
    assert set(read_weights(dst).state) == set(own)


def _mutate(state: dict, how: str) -> str:
    if how == "missing":
        key = "neck.down_p4.bn.running_var"
        del state[key]
    elif how == "unexpected":
        key = "head.extra_branch.weight"
        state[key] = torch.zeros(3)
    else:
        key = "head.coef_branch.0.pred.weight"
        state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])
    return key


@pytest.mark.parametrize("how", ["missing", "unexpected", "wrong shape"])
def test_strict_loading_names_the_offending_key(tmp_path, net, how):
    """A file that does not fit the network names the key; convert writes nothing; the model is untouched."""
    state = dict(net.state_dict())
    key = _mutate(state, how)
    path = save_safetensors(state, net.config, tmp_path / "bad.safetensors")
    dst = tmp_path / "out.safetensors"
    for entry in (load_model, lambda p: fastsam.convert(p, dst)):
        with pytest.raises(CheckpointError) as info:
            entry(path)
        msg = _one_line_error(info.value)
        assert key in msg and f"{how}:" in msg
    assert not dst.exists() and not dst.with_name(dst.name + ".tmp").exists()
    fresh = build_model("n")
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_state_strict(fresh, state)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_safetensors_without_fastsam_metadata_refused(tmp_path, net):
    """A plain safetensors file (no fastsam metadata) is not guessed at."""
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    dst = tmp_path / "out.safetensors"
    for entry in (read_weights, load_model, lambda p: fastsam.convert(p, dst)):
        with pytest.raises(CheckpointError) as info:
            entry(path)
        msg = _one_line_error(info.value)
        assert str(path) in msg and "metadata" in msg
    assert not dst.exists()


@pytest.mark.parametrize("wrap", ["bare", "in-model-key"])
def test_pickled_ultralytics_state_dict_loads(tmp_path, net, wrap):
    """A state dict in ultralytics numbering comes back under our names with identical tensors."""
    ult = to_ultralytics(net)
    path = tmp_path / "ult.pt"
    torch.save(ult if wrap == "bare" else {"model": ult}, path)
    weights = read_weights(path)
    assert weights.config == net.config
    own = net.state_dict()
    assert set(weights.state) == set(own)
    for key in own:
        assert torch.equal(weights.state[key], own[key]), key
    assert load_model(path).config == net.config


def test_pickled_ultralytics_module_tree_loads(tmp_path, net, monkeypatch):
    """A SegmentationModel pickled as a module tree (as ultralytics saves it) reads through placeholders."""
    tasks = types.ModuleType("ultralytics.nn.tasks")
    for name in ("ultralytics", "ultralytics.nn"):  # fake parents: the real package must not be imported
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "ultralytics.nn.tasks", tasks)
    tasks.SegmentationModel = type("SegmentationModel", (nn.Module,), {"__module__": "ultralytics.nn.tasks"})
    root = tasks.SegmentationModel()
    for key, value in to_ultralytics(net).items():
        *parents, leaf = key.split(".")
        mod = root
        for part in parents:
            if part not in mod._modules:
                mod.add_module(part, nn.Module())
            mod = mod._modules[part]
        mod.register_buffer(leaf, value.half() if value.is_floating_point() else value)
    ckpt = {"model": root, "ema": None, "version": "8.0.0", "train_args": {"data": Path("sa.yaml"), "epochs": 3}}
    torch.save(ckpt, tmp_path / "FastSAM-n.pt")
    weights = read_weights(tmp_path / "FastSAM-n.pt")
    assert weights.config == net.config
    assert weights.provenance["ultralytics_version"] == "8.0.0" and weights.provenance["source_dtype"] == "float16"
    assert weights.provenance["train_args"] == {"data": "sa.yaml", "epochs": 3}
    own = net.state_dict()
    assert set(weights.state) == set(own)
    for key in own:
        expected = own[key].half() if own[key].is_floating_point() else own[key]
        assert torch.equal(weights.state[key], expected), key


@pytest.mark.parametrize("scale,overrides", [("n", {"reg_max": 26}), ("s", {"num_classes": 3})])
def test_infer_config_recovers_architecture(scale, overrides):
    """Scale, classes, reg_max and mask count are derived from tensor shapes alone."""
    model = build_model(scale, **overrides)
    cfg = infer_config(to_ultralytics(model))
    assert cfg == model.config
    assert (cfg.scale, cfg.num_classes, cfg.reg_max, cfg.num_masks) == (
        scale,
        overrides.get("num_classes", 1),
        overrides.get("reg_max", 16),
        32,
    )


@pytest.mark.parametrize("how", ["shifted", "wrong-length"])
def test_altered_dfl_weight_refused(tmp_path, net, how):
    """The fixed DFL projection must be exactly 0..reg_max-1."""
    ult = to_ultralytics(net)
    ult[DFL_KEY] = ult[DFL_KEY] + 1 if how == "shifted" else torch.arange(17.0).view(1, 17, 1, 1)
    path = tmp_path / "dfl.pt"
    torch.save(ult, path)
    with pytest.raises(CheckpointError) as info:
        read_weights(path)
    assert type(info.value) is CheckpointError and DFL_KEY in _one_line_error(info.value)
    with pytest.raises(CheckpointError):
        from_ultralytics(ult, net.config)


@pytest.mark.parametrize("scale", list(SCALES))
def test_key_map_is_a_bijection_and_round_trips(scale):
    """key_map covers every state-dict key one-to-one; to/from_ultralytics is the identity."""
    cfg = ModelConfig(scale=scale, reg_max=26 if scale == "x" else 16)
    with torch.device("meta"):
        model = FastSAMNet(cfg)
    own = model.state_dict()
    mapping = key_map(model)
    assert set(mapping) == set(own)
    assert len(set(mapping.values())) == len(mapping)
    assert all(v.startswith("model.") for v in mapping.values()) and DFL_KEY not in mapping.values()
    assert mapping["head.coef_branch.0.pred.weight"] == "model.22.cv4.0.2.weight"
    ult = to_ultralytics(model)
    assert set(ult) == set(mapping.values()) | {DFL_KEY}
    back = from_ultralytics(ult, cfg)
    assert set(back) == set(own)
    for key, value in back.items():
        assert value is ult[mapping[key]] and value.shape == own[key].shape, key
    assert infer_config(ult) == cfg
