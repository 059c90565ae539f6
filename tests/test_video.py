"""Videos and streams: ``fastsam segment|prompt VIDEO`` (JSONL + overlay mp4), tracking with the demo
model against known identities (IDF1), frame selection, truncated and corrupt files, frame
directories, prompt propagation, ``FastSAM.stream``, and the reader's and writer's guarantees.

The clips are made here with PyAV: moving synthetic shapes (tests/_video_clips.py) with known masks."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _video_clips import H, W, scene, write_clip
from PIL import Image

from fastsam import FastSAM
from fastsam.cli import main
from fastsam.errors import FastSAMError
from fastsam.formats import rle_decode
from fastsam.video import VideoReader, VideoWriter, track_colors

FRAMES, FPS = 24, 8
STAYING = (0, 1, 2)  # identities visible in every frame (3 is hidden in frames 14..17)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[int, np.ndarray]]]:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    return path, write_clip(path, FRAMES, FPS)


@pytest.fixture(scope="module")
def tracked(clip: tuple[Path, list], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tracked")
    assert main(["segment", str(clip[0]), "--out", str(out), "--track", "--imgsz", "320", "--no-progress"]) == 0
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def idf1(truth: list[dict[int, np.ndarray]], predicted: list[dict[int, np.ndarray]], thr: float = 0.5) -> float:
    """IDF1 (Ristani et al. 2016): the one-to-one identity matching between true and predicted
    trajectories that maximises the frames where a pair overlaps at IoU >= thr (IDTP), then
    2 IDTP / (true detections + predicted detections)."""
    from scipy.optimize import linear_sum_assignment

    gt_ids = sorted({i for f in truth for i in f})
    pr_ids = sorted({j for f in predicted for j in f})
    overlap = np.zeros((len(gt_ids), len(pr_ids)))
    for gt, pr in zip(truth, predicted):
        for a, i in enumerate(gt_ids):
            for b, j in enumerate(pr_ids):
                if i in gt and j in pr and iou(gt[i], pr[j]) >= thr:
                    overlap[a, b] += 1
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    idtp = overlap[rows, cols].sum()
    return float(2 * idtp / (sum(map(len, truth)) + sum(map(len, predicted))))


def tracked_masks(records: list[dict]) -> dict[int, np.ndarray]:
    return {r["track_id"]: rle_decode(r["segmentation"]) for r in records if r["track_id"] is not None}


@pytest.mark.slow
def test_tracking_the_demo_model_keeps_identities(clip: tuple[Path, list], tracked: Path) -> None:
    truth = clip[1]
    got = lines(tracked / "clip.jsonl")
    assert [g["frame"] for g in got] == list(range(FRAMES))
    np.testing.assert_allclose([g["time"] for g in got], np.arange(FRAMES) / FPS, atol=1e-6)
    predicted = [tracked_masks(g["records"]) for g in got]
    score = idf1(truth, predicted)
    assert score >= 0.9, score
    for ident in (*STAYING, 3):  # the same track id in every frame the object is seen: no switch
        ids = set()
        for gt, pr in zip(truth, predicted):
            if ident in gt:
                best = max(pr, key=lambda j: iou(gt[ident], pr[j]))
                assert iou(gt[ident], pr[best]) >= 0.5
                ids.add(best)
        assert len(ids) == 1, (ident, ids)  # object 3 is re-identified after being hidden 4 frames
    every = [r for g in got for r in g["records"]]
    assert all(set(r) >= {"segmentation", "area", "bbox", "predicted_iou", "track_id"} for r in every)


@pytest.mark.slow
def test_overlay_video_has_every_frame_in_stable_track_colours(clip: tuple[Path, list], tracked: Path) -> None:
    frames = list(VideoReader(tracked / "clip.mp4"))
    assert len(frames) == FRAMES and frames[0].rgb.shape == (H, W, 3)
    truth = clip[1]
    # the red ellipse is drawn in its track's colour, the same at the start and at the end
    first, last = (f.rgb[truth[t][0]].mean(0) for f, t in ((frames[0], 0), (frames[-1], FRAMES - 1)))
    assert np.abs(first - last).max() < 12
    assert np.abs(first - np.array([220, 30, 30])).max() > 20  # it is overlaid, not the raw colour
    tid = next(iter(tracked_masks(lines(tracked / "clip.jsonl")[0]["records"])))
    assert track_colors(np.array([tid])).shape == (1, 3)


def test_reader_gives_exactly_the_selected_frames(clip: tuple[Path, list]) -> None:
    got = [(f.index, f.time) for f in VideoReader(clip[0], vid_stride=3, start=1.0, end=2.5)]
    assert [i for i, _ in got] == [8, 11, 14, 17]  # t in [1.0, 2.5) at 8 fps: frames 8..19, every 3rd
    np.testing.assert_allclose([t for _, t in got], [1.0, 1.375, 1.75, 2.125])
    assert len(list(VideoReader(clip[0]))) == FRAMES
    first = next(iter(VideoReader(clip[0])))
    want, _ = scene(0)
    assert np.abs(first.rgb.astype(int) - want).mean() < 3  # RGB, not BGR; decoded faithfully
    with pytest.raises(FastSAMError, match="end"):
        VideoReader(clip[0], start=2, end=1)


def test_cli_stride_start_end(clip: tuple[Path, list], tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["segment", str(clip[0]), "--out", str(out), "--imgsz", "320", "--no-progress"]
    assert main([*argv, "--vid-stride", "5", "--start", "1", "--end", "3"]) == 0
    got = lines(out / "clip.jsonl")
    assert [g["frame"] for g in got] == [8, 13, 18, 23]
    assert all("track_id" not in r for g in got for r in g["records"])
    assert len(list(VideoReader(out / "clip.mp4"))) == 4


def test_decoding_stays_a_bounded_queue_ahead(clip: tuple[Path, list]) -> None:
    reader = VideoReader(clip[0], queue_size=2)
    frames = iter(reader)
    next(frames)
    time.sleep(0.5)  # the decoder had time to run ahead: it stops at the queue's bound
    assert reader.report.decoded <= 1 + 2 + 1  # consumed + queued + the one waiting to be queued
    frames.close()  # leaving early stops the thread
    assert not any(t.name == "fastsam-decode" for t in threading.enumerate())


def test_truncated_video_processes_what_decodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "full.mp4"
    write_clip(src, 16, FPS, faststart=True)  # index first: the frames before the cut stay readable
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    out = tmp_path / "out"
    assert main(["segment", str(cut), "--out", str(out), "--imgsz", "320", "--no-progress"]) == 0
    got = lines(out / "cut.jsonl")
    assert 1 <= len(got) < 16
    assert [g["frame"] for g in got] == list(range(len(got)))
    assert len(list(VideoReader(out / "cut.mp4"))) == len(got)
    err = capsys.readouterr().err
    assert f"{16 - len(got)} frame(s) could not be decoded" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["header-only", "garbage", "missing"])
def test_unreadable_video_exits_2_in_one_line(kind: str, tmp_path: Path, usage_error) -> None:
    path = tmp_path / "bad.mp4"
    if kind == "header-only":
        write_clip(tmp_path / "full.mp4", 4, FPS)
        path.write_bytes((tmp_path / "full.mp4").read_bytes()[:200])
    elif kind == "garbage":
        path.write_bytes(b"not a video " * 50)
    line = usage_error(main(["segment", str(path), "--out", str(tmp_path / "out"), "--no-progress"]))
    assert "bad.mp4" in line and ("not a readable video" in line or "not found" in line)
    assert not (tmp_path / "out").exists()


def test_outputs_never_replace_the_input_video(clip: tuple[Path, list], usage_error) -> None:
    before = clip[0].read_bytes()
    line = usage_error(main(["segment", str(clip[0]), "--out", str(clip[0].parent)]))
    assert "would overwrite the input" in line
    assert clip[0].read_bytes() == before


def test_frame_directory_is_a_video_only_when_asked(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(3):
        Image.fromarray(scene(4 * t)[0]).save(frames / f"{t:04d}.png")
    out = tmp_path / "out"
    argv = ["segment", str(frames), "--out", str(out), "--imgsz", "320", "--no-progress"]
    assert main(argv) == 0  # today's behaviour: each image on its own
    names = [f"000{t}.{s}" for t in range(3) for s in ("json", "png")]
    assert sorted(p.name for p in out.iterdir()) == [*names, "index.json"]
    assert main([*argv, "--frames", "--fps", "2", "--out", str(tmp_path / "video")]) == 0
    got = lines(tmp_path / "video" / "frames.jsonl")
    assert [(g["frame"], g["time"]) for g in got] == [(0, 0.0), (1, 0.5), (2, 1.0)]


@pytest.mark.slow
def test_prompt_follows_the_object_selected_on_the_first_frame(clip: tuple[Path, list], tmp_path: Path) -> None:
    truth = clip[1]
    ys, xs = np.nonzero(truth[0][0])  # a point on the red ellipse, a box around the blue square
    by, bx = np.nonzero(truth[0][1])
    point, box = f"{int(xs.mean())},{int(ys.mean())}", f"{bx.min()},{by.min()},{bx.max()},{by.max()}"
    out = tmp_path / "out"
    argv = ["prompt", str(clip[0]), "--point", point, "--box", box, "--track", "--end", "1.5", "--imgsz", "320"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    got = lines(out / "clip.jsonl")
    assert len(got) == 12
    for t, g in enumerate(got):
        assert [r["prompt"]["type"] for r in g["records"]] == ["points", "box"]  # one record per prompt
        for rec, ident in zip(g["records"], (0, 1)):
            assert iou(rle_decode(rec["segmentation"]), truth[t][ident]) >= 0.8, (t, ident)
            assert rec["prompt"]["track_ids"] == got[0]["records"][ident]["prompt"]["track_ids"] != []
    assert len(list(VideoReader(out / "clip.mp4"))) == 12


def test_stream_api(clip: tuple[Path, list]) -> None:
    frames = list(FastSAM(cache_size=0).stream(clip[0], track=True, vid_stride=8, imgsz=320))
    assert [f.index for f in frames] == [0, 8, 16]
    assert [f.time for f in frames] == [0.0, 1.0, 2.0]
    for f in frames:
        assert f.track_ids is not None and f.track_ids.dtype == np.int64 and f.track_ids.shape == (len(f.segments),)
        assert f.segments.image_size == (H, W) and f.image.shape == (H, W, 3)
    untracked = next(iter(FastSAM(cache_size=0).stream(clip[0], imgsz=320)))
    assert untracked.track_ids is None


def test_writer_is_atomic_and_pads_odd_sizes(tmp_path: Path) -> None:
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"the user's file")
    with pytest.raises(RuntimeError), VideoWriter(target, 10) as w:
        w.write(np.zeros((31, 41, 3), np.uint8))
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]  # no temporary left behind
    with VideoWriter(tmp_path / "odd.mp4", 10) as w:
        for k in range(3):
            w.write(np.full((31, 41, 3), 60 * k, np.uint8))
        with pytest.raises(FastSAMError, match="41x31"):
            w.write(np.zeros((32, 41, 3), np.uint8))
    frames = list(VideoReader(tmp_path / "odd.mp4"))
    assert len(frames) == 3 and frames[0].rgb.shape == (32, 42, 3)
    assert abs(float(frames[2].rgb.mean()) - 120) < 4


def test_missing_video_extra_is_named(clip: tuple[Path, list], monkeypatch: pytest.MonkeyPatch, usage_error) -> None:
    import fastsam.extras

    monkeypatch.setattr(fastsam.extras, "installed", lambda module: module != "av")
    line = usage_error(main(["segment", str(clip[0]), "--out", "unused"]))
    assert "pip install 'fastsam[video]'" in line


def test_resume_skips_a_video_whose_outputs_are_complete(clip: tuple[Path, list], tracked: Path, capsys) -> None:
    outputs = [tracked / "clip.jsonl", tracked / "clip.mp4"]
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in outputs]
    argv = ["segment", str(clip[0]), "--out", str(tracked), "--track", "--imgsz", "320", "--no-progress", "--resume"]
    assert main(argv) == 0
    assert "complete: skipped (--resume)" in capsys.readouterr().err
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in outputs] == before  # not redone
    outputs[1].unlink()  # an incomplete pair is done again
    assert main(argv) == 0
    assert outputs[1].is_file() and len(lines(outputs[0])) == FRAMES
