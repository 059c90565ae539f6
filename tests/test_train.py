"""Trainer: learning happens, resume is exact, DDP equals one process, the CLI trains and fine-tunes."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastsam import FastSAM
from fastsam.cli import main
from fastsam.data.datasets import SA1BDataset
from fastsam.data.synth import write_dataset
from fastsam.io.checkpoint import read_weights
from fastsam.nn.model import build_model
from fastsam.train.augment import AugmentConfig
from fastsam.train.data import TrainDataset, collate
from fastsam.train.trainer import TrainConfig, Trainer

SIZE = 96


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train_scenes")
    write_dataset(root, 8, seed=3, size=(SIZE, SIZE))
    return root


def _config(scenes: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(scenes),
        model="n",
        out=str(out),
        imgsz=SIZE,
        epochs=3,
        batch=4,
        workers=0,
        warmup_epochs=0.0,
        close_mosaic=1,
        optimizer="AdamW",
        lr0=0.002,
        seed=5,
    )
    return TrainConfig(**{**base, **kw})


def _losses(history: list[dict]) -> list[tuple[float, ...]]:
    return [(h["box"], h["mask"], h["cls"], h["dfl"]) for h in history]


@pytest.mark.slow
def test_losses_finite_and_decreasing_when_overfitting(scenes: Path, tmp_path: Path) -> None:
    cfg = _config(
        scenes,
        tmp_path,
        epochs=16,
        batch=4,
        limit=4,
        mosaic=0.0,
        fliplr=0.0,
        hsv_h=0.0,
        hsv_s=0.0,
        hsv_v=0.0,
        scale=0.0,
        translate=0.0,
        ema=False,
        optimizer="AdamW",
        lr0=0.01,
    )
    result = Trainer(cfg, progress=False).train()
    totals = [sum(x) for x in _losses(result.history)]
    assert len(totals) == 16 and all(math.isfinite(v) for v in totals)
    assert sum(totals[-3:]) / 3 < 0.6 * sum(totals[:3]) / 3, totals
    # Outputs: per-iteration log, resumable state, exported weights that load as a model.
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["iter"] for line in lines] == list(range(1, 17))
    assert (tmp_path / "weights" / "last.pt").is_file()
    weights = read_weights(result.weights)
    assert weights.config.scale == "n" and weights.provenance["imgsz"] == SIZE and weights.provenance["epochs"] == 16


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_loss_sequence(scenes: Path, tmp_path: Path) -> None:
    full = Trainer(_config(scenes, tmp_path / "full"), progress=False).train()
    first = Trainer(_config(scenes, tmp_path / "cut"), progress=False)
    first.train(stop_after_epochs=1)
    assert first.epoch == 1
    resumed = Trainer.from_checkpoint(tmp_path / "cut" / "weights" / "last.pt")
    resumed.progress = False
    assert resumed.epoch == 1 and resumed.iteration == 2
    rest = resumed.train()
    assert len(full.history) == 6
    assert _losses(rest.history) == _losses(full.history)  # bit-identical on CPU
    final_a = read_weights(full.weights).state
    final_b = read_weights(rest.weights).state
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_resume_refuses_files_that_are_not_training_checkpoints(tmp_path: Path) -> None:
    bogus = tmp_path / "last.pt"
    torch.save({"hello": 1}, bogus)
    assert main(["train", "--resume", str(bogus)]) == 2
    assert main(["train", "--resume", str(tmp_path / "missing.pt")]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _micro_batches(scenes: Path) -> list:
    ds = TrainDataset(SA1BDataset(scenes), SIZE, AugmentConfig(mosaic=0.0), seed=1)
    ds.set_epoch(0)
    return [collate([ds[0], ds[1]]), collate([ds[2], ds[3]])]


def _ddp_worker(rank: int, port: int, scenes: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    trainer = Trainer(_config(Path(scenes), Path(out)), model=build_model("n"), train_set=[0] * 8, progress=False)
    loss, _ = trainer.loss(_micro_batches(Path(scenes))[rank])
    loss.backward()
    if rank == 0:
        torch.save({k: p.grad for k, p in trainer.model.named_parameters()}, Path(out) / "ddp_grads.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_one_process_on_the_global_batch(scenes: Path, tmp_path: Path) -> None:
    # One process, the global batch of 4 images as the same two micro-batches of 2 the two DDP
    # processes see (BatchNorm statistics are per micro-batch in both cases), gradients summed.
    torch.manual_seed(0)
    single = Trainer(_config(scenes, tmp_path / "one"), model=build_model("n"), train_set=[0] * 8, progress=False)
    for batch in _micro_batches(scenes):
        loss, _ = single.loss(batch)
        loss.backward()
    mp.spawn(_ddp_worker, args=(_free_port(), str(scenes), str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp_grads.pt", weights_only=True)
    worst = 0.0
    for name, p in single.model.named_parameters():
        g = ddp[name]
        assert g is not None, name
        worst = max(worst, ((g - p.grad).abs().max() / p.grad.abs().max().clamp(min=1e-12)).item())
    assert worst < 1e-4, worst


@pytest.mark.slow
def test_cli_trains_then_validates_and_fine_tunes(scenes: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--data",
            str(scenes),
            "--model",
            "n",
            "--imgsz",
            str(SIZE),
            "--epochs",
            "1",
            "--batch",
            "4",
            "--workers",
            "0",
            "--out",
            str(out),
            "--val-data",
            str(scenes),
            "--no-progress",
        ]
    )
    assert rc == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and 0.0 <= metrics[0]["mask_AR@100"] <= 1.0
    weights = out / "weights" / "model.safetensors"
    assert read_weights(weights).provenance["metrics"]["epoch"] == 1
    # A run's last.pt converts to the same (EMA) weights, here in fp16, with the same provenance.
    half = tmp_path / "half.safetensors"
    assert (
        main(["convert", str(out / "weights" / "last.pt"), str(half), "--dtype", "fp16", "--predict-imgsz", "128"]) == 0
    )
    exported, shipped = read_weights(half), read_weights(weights)
    assert exported.provenance["imgsz"] == SIZE and exported.provenance["images"] == 8
    assert FastSAM(half).default_imgsz == 128 and FastSAM(weights).default_imgsz == SIZE
    assert main(["convert", str(weights), str(tmp_path / "x.safetensors"), "--predict-imgsz", "128"]) == 2
    assert all(
        torch.equal(exported.state[k], shipped.state[k].half())
        for k in shipped.state
        if shipped.state[k].is_floating_point()
    )
    # Fine-tune the exported weights (any supported weight file works the same way).
    rc = main(
        [
            "train",
            "--data",
            str(scenes),
            "--model",
            str(weights),
            "--imgsz",
            str(SIZE),
            "--epochs",
            "1",
            "--batch",
            "4",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "ft"),
            "--no-progress",
        ]
    )
    assert rc == 0 and (tmp_path / "ft" / "weights" / "model.safetensors").is_file()


def test_cli_train_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", str(tmp_path / "nope"), "--model", "n"]) == 2
    assert "no such dataset" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--model", "n", "--imgsz", "100"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--model", str(tmp_path / "missing.pt")]) == 2


@pytest.mark.slow
def test_torchrun_two_processes_train_from_the_cli(scenes: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "fastsam.cli",
        "train",
        "--data",
        str(scenes),
        "--model",
        "n",
        "--imgsz",
        str(SIZE),
        "--epochs",
        "2",
        "--batch",
        "4",
        "--workers",
        "0",
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # 8 images, global batch 4 -> 2 iterations per epoch, logged once (by rank 0) with losses averaged over ranks.
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == [1, 2, 3, 4] and all(math.isfinite(r["box"]) for r in log)
    assert read_weights(out / "weights" / "model.safetensors").provenance["epochs"] == 2


def test_fine_tuning_keeps_the_batchnorm_eps_of_its_weights(scenes: Path, tmp_path: Path) -> None:
    """eps is a per-layer constant (issue 10, defect 8): a run fine-tuned from weights with another eps
    trains, resumes and exports with that eps."""
    from fastsam.config import ModelConfig
    from fastsam.io.checkpoint import save_safetensors
    from fastsam.nn.model import batchnorm_eps, build_model, set_batchnorm_eps
    from fastsam.train.trainer import export_checkpoint

    net = build_model(ModelConfig(scale="n"))
    eps = {name: 1e-5 for name, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    eps["backbone.stem.bn"] = 1e-4
    set_batchnorm_eps(net, eps)
    src = save_safetensors(net.state_dict(), net.config, tmp_path / "src.safetensors", bn_eps=batchnorm_eps(net))
    trainer = Trainer(_config(scenes, tmp_path / "run", model=str(src), epochs=1, limit=4), progress=False)
    assert batchnorm_eps(trainer.model) == eps
    result = trainer.train()
    assert read_weights(result.weights).bn_eps == eps
    exported = export_checkpoint(tmp_path / "run" / "weights" / "last.pt", tmp_path / "exported.safetensors")
    assert read_weights(exported).bn_eps == eps
