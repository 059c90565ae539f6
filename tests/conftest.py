"""Shared fixtures. ultralytics (a test-only reference) only ever runs in subprocesses."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference"


def ultralytics_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_VERBOSE="False", YOLO_CONFIG_DIR=str(tmp / "yolo-cfg"))
    return env


def run_script(args: list[str], tmp: Path, timeout: int = 600) -> None:
    proc = subprocess.run(
        [sys.executable, *args], env=ultralytics_env(tmp), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="session")
def ultra_assets() -> Path:
    """ultralytics' shipped photos (bus.jpg 810x1080, zidane.jpg 1280x720), found without importing it."""
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations, "ultralytics (test extra) is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "assets"


@pytest.fixture(scope="session")
def ultra_ckpts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FastSAM-s / FastSAM-x-architecture checkpoints written by ultralytics itself (random weights)."""
    out = tmp_path_factory.mktemp("ultra-ckpts")
    run_script([str(REFERENCE / "ultra_ref.py"), "make", str(out)], out)
    return out


@pytest.fixture(scope="session")
def small_ckpt(ultra_ckpts: Path) -> Path:
    return ultra_ckpts / "FastSAM-s.pt"


@pytest.fixture
def usage_error(capsys: pytest.CaptureFixture[str]):
    """``usage_error(rc)``: assert a CLI user error (exit 2, exactly one stderr line, the error line,
    no traceback) and return that line."""

    def check(rc: int) -> str:
        err = capsys.readouterr().err
        assert rc == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fastsam: error:"), err
        assert "Traceback" not in err
        return lines[0]

    return check


@pytest.fixture
def foreign_onnx(tmp_path: Path) -> Path:
    """A valid ONNX graph (Relu, input ``images``, output ``preds``) that is not a fastsam export: no metadata."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["preds"])],
        "relu",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("preds", TensorProto.FLOAT, [1, 3, 32, 32])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path
