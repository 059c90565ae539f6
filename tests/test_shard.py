"""Many processes (issue 12 part 6): torchrun shards segment and label, --resume after a kill,
OUT/index.json, SA-1B .tar shards as sources. The demo model at a small size, 12 small scenes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from fastsam.cli import main
from fastsam.data.synth import write_dataset
from fastsam.errors import FastSAMError
from fastsam.shard import Shard, wait_for_ranks, write_done

N = 12
OPTS = ["--imgsz", "256", "--conf", "0.4", "--iou", "0.9", "--max-det", "100"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"  # the same thread count everywhere: byte-identical floats
    return env


def _fastsam(*args: str, cwd: Path, torchrun: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [*(torchrun or [sys.executable]), "-m", "fastsam.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def _files(out: Path) -> dict[str, bytes]:
    """The visible files of OUT (temporary files of a killed write are hidden)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shard_scenes")
    write_dataset(root / "images", N, seed=5, size=(128, 160))
    return root


@pytest.fixture(scope="module")
def alone(scenes: Path) -> dict[str, bytes]:
    """OUT of one process over the 12 scenes."""
    r = _fastsam("segment", "images", "--out", "alone", *OPTS, cwd=scenes)
    assert r.returncode == 0, r.stderr
    return _files(scenes / "alone")


def test_shard_is_balanced_and_disjoint() -> None:
    items = list(range(11))
    shares = [Shard(r, 3).take(items) for r in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert sorted(i for share in shares for i in share) == items


def test_index_of_one_process(alone: dict[str, bytes]) -> None:
    index = json.loads(alone["index.json"])
    assert index["command"] == "segment" and index["options"]["imgsz"] == 256
    assert [e["stem"] for e in index["images"]] == [f"sa_{i:06d}" for i in range(1, N + 1)]
    for e in index["images"]:
        assert e["name"] == f"images/{e['stem']}.jpg" and e["files"] == [f"{e['stem']}.json", f"{e['stem']}.png"]
        assert e["records"] == len(json.loads(alone[f"{e['stem']}.json"])) > 0
    assert set(alone) == {"index.json"} | {f for e in index["images"] for f in e["files"]}


def test_torchrun_two_ranks_equal_one_process(scenes: Path, alone: dict[str, bytes]) -> None:
    logs = scenes / "logs"
    run = [*TORCHRUN, "--log-dir", str(logs), "--redirects", "2"]
    r = _fastsam("segment", "images", "--out", "two", *OPTS, cwd=scenes, torchrun=run)
    assert r.returncode == 0, r.stderr
    assert _files(scenes / "two") == alone  # records, overlays and index.json, byte for byte
    assert not (scenes / "two" / ".fastsam").exists()  # the bookkeeping is gone: the same files as one process
    shares = []
    for rank in (0, 1):
        (log,) = logs.rglob(f"attempt_0/{rank}/stderr.log")
        text = log.read_text()
        assert f"rank {rank} of 2: 6 of {N} images to do" in text
        shares.append([line.split(":")[0] for line in text.splitlines() if " records -> " in line])
    # each image written exactly once, rank r taking the images r, r + 2, ...
    assert shares == [[f"images/sa_{i:06d}.jpg" for i in range(r + 1, N + 1, 2)] for r in (0, 1)]


def test_torchrun_failure_on_another_rank_is_in_rank0_index(scenes: Path, tmp_path: Path) -> None:
    src = tmp_path / "mixed"
    src.mkdir()
    for i in (1, 3, 4):
        (src / f"sa_{i:06d}.jpg").write_bytes((scenes / "images" / f"sa_{i:06d}.jpg").read_bytes())
    (src / "sa_000002.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # position 1: rank 1's
    one = _fastsam("segment", "mixed", "--out", "one", *OPTS, cwd=tmp_path)
    two = _fastsam("segment", "mixed", "--out", "two", *OPTS, cwd=tmp_path, torchrun=TORCHRUN)
    assert one.returncode == 2 and two.returncode != 0  # rank 0 exits with 2: one input failed
    assert _files(tmp_path / "two") == _files(tmp_path / "one")  # rank 0 still wrote the index
    errors = [e for e in json.loads((tmp_path / "two" / "index.json").read_text())["images"] if "error" in e]
    assert [e["stem"] for e in errors] == ["sa_000002"] and "not a readable image" in errors[0]["error"]


def test_kill_then_resume_finishes_without_redoing(scenes: Path, alone: dict[str, bytes]) -> None:
    out = scenes / "killed"
    cmd = [sys.executable, "-m", "fastsam.cli", "segment", "images", "--out", "killed", *OPTS]
    proc = subprocess.Popen(cmd, cwd=scenes, env=_env(), start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and len(list(out.glob("*.png"))) >= 3:
            os.killpg(proc.pid, signal.SIGKILL)  # mid-way: a real kill, writes in flight included
            break
        time.sleep(0.005)
    proc.wait(30)
    assert not (out / "index.json").exists() or proc.returncode == 0
    if proc.returncode == 0:  # finished before the kill landed: take the last half away instead
        for i in range(N // 2 + 1, N + 1):
            for suffix in (".json", ".png"):
                (out / f"sa_{i:06d}{suffix}").unlink()
        (out / "index.json").unlink()
    (out / f".sa_{N:06d}.png.99999.0badf00d.tmp").write_bytes(b"half a write")  # as a kill mid-write leaves
    done = [s for s in (f"sa_{i:06d}" for i in range(1, N + 1)) if (out / f"{s}.png").exists()]
    assert 0 < len(done) < N
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for s in done for p in (out / f"{s}.json", out / f"{s}.png")}
    # the unfinished run recorded its options: a resume with others is refused before any work
    r = _fastsam("segment", "images", "--out", "killed", "--resume", *OPTS, "--conf", "0.5", cwd=scenes)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "other options (options.json)" in r.stderr
    r = _fastsam("segment", "images", "--out", "killed", "--resume", *OPTS, cwd=scenes)
    assert r.returncode == 0, r.stderr
    assert f"{N - len(done)} of {N} images to do ({len(done)} of its {N} already done)" in r.stderr
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in before} == before  # not redone
    assert _files(out) == alone
    assert not (out / ".fastsam").exists()
    assert not list(out.glob(".*.tmp"))  # what a killed write left is gone
    # a finished run's options are in its index
    r = _fastsam("segment", "images", "--out", "killed", "--resume", *OPTS, "--conf", "0.5", cwd=scenes)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "other options (index.json)" in r.stderr


def _shard_tar(scenes: Path, name: str, mode: str = "w") -> Path:
    path = scenes / name
    with tarfile.open(path, mode) as tf:
        for i in (1, 2, 3):  # SA-1B layout: image and annotation side by side
            for suffix in (".jpg", ".json"):
                tf.add(scenes / "images" / f"sa_{i:06d}{suffix}", arcname=f"sa_{i:06d}{suffix}")
    return path


@pytest.mark.parametrize("name, mode", [("sa_000000.tar", "w"), ("sa_000000.tar.gz", "w:gz")])
def test_tar_shard_equals_its_files(scenes: Path, tmp_path: Path, name: str, mode: str, capsys) -> None:
    tar = _shard_tar(scenes, name, mode)
    files = [str(scenes / "images" / f"sa_{i:06d}.jpg") for i in (1, 2, 3)]
    assert main(["segment", str(tar), "--out", str(tmp_path / "tar"), "--no-progress", *OPTS]) == 0
    assert main(["segment", *files, "--out", str(tmp_path / "files"), "--no-progress", *OPTS]) == 0
    from_tar, from_files = _files(tmp_path / "tar"), _files(tmp_path / "files")
    assert (
        sorted(from_tar)
        == sorted(from_files)
        == ["index.json", *sorted(f"sa_{i:06d}{s}" for i in (1, 2, 3) for s in (".json", ".png"))]
    )
    assert {k: v for k, v in from_tar.items() if k != "index.json"} == {
        k: v for k, v in from_files.items() if k != "index.json"
    }
    names = [e["name"] for e in json.loads(from_tar["index.json"])["images"]]
    assert names == [f"{tar}/sa_{i:06d}.jpg" for i in (1, 2, 3)]


def test_truncated_tar_is_one_line_and_writes_nothing(scenes: Path, tmp_path: Path, capsys) -> None:
    data = _shard_tar(scenes, "whole.tar").read_bytes()
    for cut in (len(data) // 2, 3 * 512 + 100, len(data) - 9 * 1024):
        bad = tmp_path / "cut.tar"
        bad.write_bytes(data[:cut])
        capsys.readouterr()
        assert main(["segment", str(bad), "--out", str(tmp_path / "out"), *OPTS]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"fastsam: error: {bad}: ") and err.count("\n") == 1, err
        assert not (tmp_path / "out").exists()


def test_label_torchrun_equals_one_process(scenes: Path) -> None:
    tar = _shard_tar(scenes, "label.tar")
    args = ["label", "images", tar.name, "--format", "coco", *OPTS]
    one = _fastsam(*args, "--out", "coco1", cwd=scenes)
    two = _fastsam(*args, "--out", "coco2", cwd=scenes, torchrun=TORCHRUN)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    merged = (scenes / "coco2" / "annotations.json").read_bytes()
    assert merged == (scenes / "coco1" / "annotations.json").read_bytes()
    data = json.loads(merged)
    assert [im["id"] for im in data["images"]] == list(range(1, N + 4))
    assert [im["file_name"] for im in data["images"]][-3:] == [f"sa_{i:06d}_1.jpg" for i in (1, 2, 3)]
    assert sorted(p.name for p in (scenes / "coco2" / "images").iterdir()) == sorted(
        p.name for p in (scenes / "coco1" / "images").iterdir()
    )
    assert not list((scenes / "coco2" / ".fastsam-label").glob("rank-*"))


@pytest.mark.parametrize("command", ["segment", "label"])
@pytest.mark.parametrize("rank, world", [("x", "2"), ("2", "2"), ("0", "0"), ("-1", "2")])
def test_bad_rank_is_one_line(
    scenes: Path, tmp_path: Path, monkeypatch, capsys, command: str, rank: str, world: str
) -> None:
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    extra = ["--format", "coco"] if command == "label" else []
    assert main([command, str(scenes / "images"), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastsam: error: ") and err.count("\n") == 1 and "RANK" in err, err
    assert not (tmp_path / "out").exists()


def test_rank0_wait_times_out_with_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_done(state, Shard(1, 3), "other-options", {"a": {}})  # a stale done file of another run
    with pytest.raises(FastSAMError, match=r"rank\(s\) 1, 2 of 3 have not finished.*--resume"):
        wait_for_ranks(state, Shard(0, 3), "key", wait_s=0.0, poll_s=0.0)
    write_done(state, Shard(1, 2), "key", {"a": {"records": 1}})
    assert wait_for_ranks(state, Shard(0, 2), "key") == {"a": {"records": 1}}


def test_an_input_named_index_keeps_the_index(scenes: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "index.jpg").write_bytes((scenes / "images" / "sa_000001.jpg").read_bytes())
    assert main(["segment", str(src), "--out", str(tmp_path / "out"), "--no-progress", *OPTS]) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [e["stem"] for e in index["images"]] == ["index_1"]
