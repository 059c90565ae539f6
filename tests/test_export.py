"""ONNX / OpenVINO exports and backends: the same masks as the PyTorch backend, and clear errors.

Parity runs on the checkpoints ultralytics itself builds and saves (FastSAM-s; FastSAM-x with
reg_max 26), on its real photos. Exports are made once per module and reused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fastsam import FastSAM
from fastsam.cli import main
from fastsam.config import PredictConfig
from fastsam.export import export_model
from fastsam.ops.agreement import mask_iou_matrix

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "examples" / "shapes.jpg"


@pytest.fixture(scope="module")
def exports(ultra_ckpts: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> exported model: {s,x}-{onnx,ov} dynamic, s-static (zidane's exact letterbox at 640)."""
    out = tmp_path_factory.mktemp("exports")
    made = {}
    for scale in ("s", "x"):
        ckpt = ultra_ckpts / f"FastSAM-{scale}.pt"
        made[f"{scale}-onnx"] = export_model(ckpt, "onnx", out / f"{scale}.onnx", imgsz=640, dynamic=True)
        made[f"{scale}-ov"] = export_model(ckpt, "openvino", out / f"{scale}_openvino_model", imgsz=640, dynamic=True)
    # zidane 1280x720 at imgsz 640 letterboxes to 384x640: the static graph sees the same input
    made["s-static"] = export_model(ultra_ckpts / "FastSAM-s.pt", "onnx", out / "s-static.onnx", imgsz=(384, 640))
    return made


def assert_same_masks(ref, got, what: str) -> None:
    """Same count; each mask, in score order, has IoU >= 0.99 with its counterpart (empty vs empty
    counts as equal; among masks whose scores tie within 1e-4, any of them), boxes within 1 px."""
    assert len(ref.scores) > 3, f"{what}: too few masks to compare ({len(ref.scores)})"
    assert len(got.scores) == len(ref.scores), f"{what}: {len(got.scores)} masks vs {len(ref.scores)}"
    a, b = ref.masks, got.masks
    iou = mask_iou_matrix(a, b)
    empty = ~a.reshape(len(a), -1).any(1)
    iou[np.ix_(empty, ~b.reshape(len(b), -1).any(1))] = 1.0
    tie = np.abs(ref.scores[:, None] - got.scores[None, :]) <= 1e-4
    tie[np.arange(len(a)), np.arange(len(a))] = True
    match = np.where(tie, iou, -1.0)
    best = match.argmax(1)
    worst = match.max(1).min()
    assert worst >= 0.99, f"{what}: worst matched IoU {worst:.4f}"
    # boxes within 1 px; on random weights a handful (<= 1%) of near-duplicate candidates sit on a
    # threshold (NMS IoU, the 20 px border snap) where a 1e-5 difference keeps the other twin
    far = (np.abs(ref.boxes - got.boxes[best]) > 1.0).any(1)
    assert far.sum() <= max(1, len(best) // 100), f"{what}: {far.sum()} boxes differ by more than 1 px"
    assert np.abs(ref.scores - got.scores[best]).max() <= 1e-3, what


@pytest.mark.parity
@pytest.mark.parametrize(
    "scale,image,imgsz",
    [("s", "zidane.jpg", 640), ("s", "zidane.jpg", 512), ("s", "bus.jpg", 640), ("x", "bus.jpg", 640)],
)
def test_fp32_exports_give_the_torch_masks(exports, ultra_ckpts, ultra_assets, scale, image, imgsz) -> None:
    cfg = PredictConfig(imgsz=imgsz)
    photo = ultra_assets / image
    ref = FastSAM(ultra_ckpts / f"FastSAM-{scale}.pt", cache_size=0).segment(photo, cfg)
    for kind, backend in (("onnx", "onnxruntime"), ("ov", "openvino")):
        model = FastSAM(exports[f"{scale}-{kind}"], cache_size=0)
        assert model.backend.name == backend and model.config.reg_max == (26 if scale == "x" else 16)
        assert_same_masks(ref, model.segment(photo, cfg), f"{scale} {backend} {image}@{imgsz}")


@pytest.mark.parity
def test_static_export_at_the_letterbox_shape_gives_the_torch_masks(exports, ultra_ckpts, ultra_assets) -> None:
    photo = ultra_assets / "zidane.jpg"
    static = FastSAM(exports["s-static"], cache_size=0)
    assert static.backend.shape == (384, 640) and static.default_imgsz == 640
    ref = FastSAM(ultra_ckpts / "FastSAM-s.pt", cache_size=0).segment(photo, PredictConfig(imgsz=640))
    assert_same_masks(ref, static.segment(photo), "static onnx")
    # another image letterboxes (centred) to the same 384x640: boxes stay in its own pixels
    bus = static.segment(ultra_assets / "bus.jpg")
    assert bus.image_size == (1080, 810) and bus.masks.shape[1:] == (1080, 810)
    if len(bus.scores):
        assert bus.boxes[:, [0, 2]].max() <= 810 and bus.boxes[:, [1, 3]].max() <= 1080


def test_metadata_travels_with_the_files(exports) -> None:
    import onnx
    import openvino as ov

    props = {p.key: p.value for p in onnx.load(str(exports["x-onnx"]), load_external_data=False).metadata_props}
    meta = json.loads(props["fastsam"])
    assert meta["format"] == "fastsam-export" and meta["outputs"] == ["preds", "protos"]
    assert meta["model"]["reg_max"] == 26 and meta["strides"] == [8, 16, 32]
    assert meta["input"]["dynamic"] and meta["input"]["shape"] is None
    assert meta["imgsz"] == 640 and meta["names"] == {"0": "object"} and meta["precision"] == "fp32"
    assert len(meta["provenance"]["weights_sha256"]) == 64
    static = json.loads({p.key: p.value for p in onnx.load(str(exports["s-static"])).metadata_props}["fastsam"])
    assert static["input"]["shape"] == [384, 640] and static["input"]["batch"] == 1
    xml = exports["s-ov"]
    assert xml.name == "s.xml" and xml.with_suffix(".bin").is_file()
    rt = json.loads(ov.Core().read_model(str(xml)).get_rt_info(["fastsam", "metadata"]).astype(str))
    assert rt["model"]["reg_max"] == 16


def test_cli_runs_every_command_on_an_export(exports, ultra_assets, tmp_path, capsys) -> None:
    photo = ultra_assets / "bus.jpg"
    outs = {}
    for name, model in (("onnx", exports["s-onnx"]), ("ov", exports["s-ov"].parent)):
        ckpt = ["--model", str(model)]
        assert main(["segment", str(photo), *ckpt, "--imgsz", "640", "--out", str(tmp_path / name)]) == 0
        assert (
            main(
                [
                    "prompt",
                    str(photo),
                    *ckpt,
                    "--imgsz",
                    "640",
                    "--box",
                    "50,400,250,900",
                    "--out",
                    str(tmp_path / f"{name}-p"),
                ]
            )
            == 0
        )
        outs[name] = (
            json.loads((tmp_path / name / "bus.json").read_text()),
            json.loads((tmp_path / f"{name}-p" / "bus.json").read_text()),
        )
    assert len(outs["onnx"][0]) == len(outs["ov"][0]) > 3
    assert len(outs["onnx"][1]) == len(outs["ov"][1]) == 1 and outs["onnx"][1][0]["area"] > 0


def test_backend_option_converts_weights_in_memory(small_ckpt, ultra_assets, tmp_path) -> None:
    photo = ultra_assets / "zidane.jpg"
    ref = FastSAM(small_ckpt, cache_size=0).segment(photo, PredictConfig(imgsz=640))
    for backend in ("onnxruntime", "openvino"):
        model = FastSAM(small_ckpt, backend=backend, cache_size=0)
        assert model.backend.name == backend
        assert_same_masks(ref, model.segment(photo, PredictConfig(imgsz=640)), f"in-memory {backend}")
    assert not list(small_ckpt.parent.glob("*.onnx")), "conversion wrote a file beside the weights"


# ---------------------------------------------------------------------------------------- int8
@pytest.fixture(scope="module")
def demo_int8(tmp_path_factory: pytest.TempPathFactory):
    """The demo model as fp32 and int8 OpenVINO, calibrated on synthetic scenes of another seed."""
    from fastsam.data.synth import write_dataset
    from fastsam.weights import default_model_path

    tmp = tmp_path_factory.mktemp("int8")
    write_dataset(tmp / "calib", 16, seed=4242, size=(320, 320))
    write_dataset(tmp / "test", 24, seed=31337, size=(320, 320))
    weights = default_model_path()
    fp32 = export_model(weights, "openvino", tmp / "fp32", dynamic=True)
    assert (
        main(
            [
                "export",
                str(weights),
                "--format",
                "openvino",
                "--out",
                str(tmp / "int8"),
                "--dynamic",
                "--int8",
                "--calib",
                str(tmp / "calib"),
                "--calib-n",
                "16",
            ]
        )
        == 0
    )
    return FastSAM(fp32, cache_size=0), FastSAM(tmp / "int8", cache_size=0), tmp / "test"


def test_int8_keeps_the_demo_models_masks(demo_int8) -> None:
    from fastsam.ops.agreement import best_match_iou
    from fastsam.train.evaluate import default_imgsz, evaluate, open_dataset

    fp32, int8, test = demo_int8
    assert int8.backend.metadata.precision == "int8"
    quant = int8.backend.metadata.quantization
    assert quant["calibration_images"] == 16 and quant["keep_fp32"] and quant["fp32_layers"] >= 1
    dataset, _ = open_dataset(test)
    imgsz = default_imgsz(fp32)
    ar32 = evaluate(fp32, dataset, imgsz=imgsz, progress=False)["mask_AR@100"]
    ar8 = evaluate(int8, dataset, imgsz=imgsz, progress=False)["mask_AR@100"]
    assert ar32 > 0.5, ar32  # the demo model really segments these scenes
    assert ar32 - ar8 <= 0.02, (ar32, ar8)
    cfg = PredictConfig(imgsz=imgsz)
    best = np.concatenate(
        [best_match_iou(fp32.segment(p, cfg).masks, int8.segment(p, cfg).masks) for p in sorted(test.glob("*.jpg"))]
    )
    assert len(best) > 50 and (best >= 0.9).mean() >= 0.9, (best >= 0.9).mean()


def test_half_is_bf16_on_openvino_where_the_cpu_has_it(demo_int8, usage_error) -> None:
    import openvino as ov

    from fastsam.errors import FastSAMError
    from fastsam.ops.agreement import best_match_iou

    fp32, _, test = demo_int8
    xml = fp32.backend.source
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(FastSAMError, match="needs a CPU with bf16 support"):
            FastSAM(xml, half=True)
        return
    half = FastSAM(xml, half=True, cache_size=0)
    assert (fp32.provenance["inference_precision"], half.provenance["inference_precision"]) == ("f32", "bf16")
    best = np.concatenate([best_match_iou(fp32(p).masks, half(p).masks) for p in sorted(test.glob("*.jpg"))])
    assert len(best) > 50 and (best >= 0.9).mean() >= 0.9, (best >= 0.9).mean()


# -------------------------------------------------------------------------------------- errors
def _cli(usage_error, *argv: str) -> str:
    return usage_error(main(list(argv)))


def test_corrupt_and_foreign_models_are_refused(tmp_path, usage_error, foreign_onnx) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07" + b"\x00\xff" * 100)
    assert "corrupt.onnx: not a readable ONNX model" in _cli(
        usage_error, "segment", str(SHAPES), "--model", str(corrupt)
    )
    foreign = foreign_onnx
    assert "no fastsam metadata" in _cli(usage_error, "segment", str(SHAPES), "--model", str(foreign))
    import openvino as ov

    ov_dir = tmp_path / "foreign_openvino_model"
    ov_dir.mkdir()
    ov.save_model(ov.convert_model(str(foreign)), str(ov_dir / "foreign.xml"))
    assert "no fastsam metadata" in _cli(usage_error, "segment", str(SHAPES), "--model", str(ov_dir))
    (ov_dir / "foreign.bin").unlink()
    assert "foreign.bin is missing" in _cli(usage_error, "segment", str(SHAPES), "--model", str(ov_dir / "foreign.xml"))
    junk = tmp_path / "junk_openvino_model"
    junk.mkdir()
    (junk / "model.xml").write_text("<net><layers></layers>")
    (junk / "model.bin").write_bytes(b"")
    assert "not a readable OpenVINO model" in _cli(usage_error, "segment", str(SHAPES), "--model", str(junk))


def test_export_errors(tmp_path, usage_error) -> None:
    from fastsam.weights import default_model_path

    w = str(default_model_path())
    assert "--int8 needs calibration images" in _cli(
        usage_error, "export", w, "--format", "openvino", "--int8", "--out", str(tmp_path / "q")
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    msg = _cli(
        usage_error, "export", w, "--format", "openvino", "--int8", "--calib", str(empty), "--out", str(tmp_path / "q")
    )
    assert "calibration" in msg and "no images" in msg
    assert "not found" in _cli(
        usage_error,
        "export",
        w,
        "--format",
        "openvino",
        "--int8",
        "--calib",
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "q"),
    )
    assert "int8 export is for --format openvino" in _cli(
        usage_error,
        "export",
        w,
        "--format",
        "onnx",
        "--int8",
        "--calib",
        str(SHAPES),
        "--out",
        str(tmp_path / "q.onnx"),
    )
    assert "weight file not found" in _cli(usage_error, "export", str(tmp_path / "none.pt"), "--format", "onnx")
    assert "expected N or H,W" in _cli(usage_error, "export", w, "--format", "onnx", "--imgsz", "640,x")
    assert not list(tmp_path.glob("q*")), "a refused export wrote something"


def test_export_never_replaces_the_weights(tmp_path, usage_error) -> None:
    from fastsam.weights import default_model_path

    weights = tmp_path / "w.onnx"
    weights.write_bytes(default_model_path().read_bytes())
    before = weights.read_bytes()
    assert "would replace the weights" in _cli(
        usage_error, "export", str(weights), "--format", "onnx", "--out", str(weights)
    )
    assert weights.read_bytes() == before


def test_static_export_refuses_another_imgsz(exports, usage_error) -> None:
    msg = _cli(
        usage_error,
        "segment",
        str(SHAPES),
        "--model",
        str(exports["s-static"]),
        "--imgsz",
        "512",
        "--out",
        str(exports["s-static"].parent / "o"),
    )
    assert "static export for 384x640 inputs" in msg and "--dynamic" in msg


def test_missing_backend_names_the_extra(exports, monkeypatch, usage_error) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    msg = _cli(usage_error, "segment", str(SHAPES), "--model", str(exports["s-onnx"]))
    assert msg.endswith("onnxruntime is not installed: pip install 'fastsam[onnx]'")
    monkeypatch.setitem(sys.modules, "openvino", None)
    msg = _cli(usage_error, "segment", str(SHAPES), "--model", str(exports["s-ov"]))
    assert msg.endswith("openvino is not installed: pip install 'fastsam[openvino]'")
    from fastsam.backends import available_backends

    assert available_backends() == ["torch"]


def test_half_on_a_backend_without_it_is_refused(exports, usage_error) -> None:
    for model in (str(exports["s-onnx"]), str(ROOT / "src" / "fastsam" / "weights" / "fastsam-demo.safetensors")):
        msg = _cli(usage_error, "segment", str(SHAPES), "--model", model, "--half")
        assert "half precision is offered on the openvino backend" in msg, msg


def test_wrong_backend_for_a_file_is_refused(exports, usage_error) -> None:
    msg = _cli(usage_error, "segment", str(SHAPES), "--model", str(exports["s-onnx"]), "--backend", "torch")
    assert "exported onnx model" in msg and "onnxruntime" in msg
    msg = _cli(usage_error, "segment", str(SHAPES), "--model", str(exports["s-ov"]), "--backend", "onnxruntime")
    assert "OpenVINO model" in msg
