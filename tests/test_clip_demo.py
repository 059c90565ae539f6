"""The shipped demo CLIP: file format, offline loading, held-out text-prompt accuracy, training code, CLI."""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from safetensors import safe_open
from safetensors.torch import save_file

import fastsam.weights
from fastsam.cli import main
from fastsam.data.synth import PALETTE, SHAPES, write_dataset
from fastsam.errors import CheckpointError, FastSAMError
from fastsam.results import Segments
from fastsam.text import BACKGROUND, ClipScorer, get_scorer, mask_crops, resize_crops
from fastsam.train import clip_demo as cd
from fastsam.weights import default_clip_path

HELD_OUT_SEED = 4242  # training used seed 0 (scenes default_rng([0, i])); the trainer's own check seed 1000
MIN_AREA = 400  # px of visible area of a target object (20 x 20)


@pytest.fixture(scope="module")
def scorer() -> ClipScorer:
    return ClipScorer(default_clip_path())


def test_shipped_file_is_small_fp16_and_self_describing() -> None:
    path = default_clip_path()
    assert path.stat().st_size <= 10 * 1024 * 1024
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        dtypes = {fh.get_slice(k).get_dtype() for k in fh.keys()}  # noqa: SIM118 - safe_open is not iterable
    assert dtypes == {"F16"}
    assert meta["format"] == "fastsam-clip"
    assert json.loads(meta["config"]) == cd.DEMO_CONFIG
    prov = json.loads(meta["provenance"])
    assert prov["trainer"] == "fastsam.train.clip_demo" and prov["seed"] == 0 and prov["scenes"] >= 500


def test_loads_offline_without_open_clip_factory(monkeypatch) -> None:
    """No network and no open_clip model factory / pretrained machinery: the file builds its own model."""
    import open_clip
    import open_clip.pretrained

    def refuse(*args, **kwargs):
        raise AssertionError("tried to reach the network or open_clip's download path")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(open_clip, "create_model", refuse)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", refuse)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_url", refuse)
    s = ClipScorer(default_clip_path())
    assert s.image_size == (48, 48) and s.model_name == "fastsam-clip-demo"
    assert all(p.dtype == torch.float32 for p in s.model.parameters())  # fp16 file, fp32 inference
    crop = np.full((30, 30, 3), BACKGROUND, np.uint8)
    crop[5:25, 5:25] = PALETTE["red"]
    sims = s.similarity([crop, crop[:, :, ::-1].copy()], ["a red polygon", "a blue polygon"])
    assert sims.shape == (2, 2) and np.all(np.abs(sims) <= 1 + 1e-5)
    # a red square is "red" to the model; the same square in blue (BGR swap) is not
    assert sims[0, 0] > sims[0, 1] and sims[1, 1] > sims[1, 0]
    # a model name does not apply to a self-describing file (the compat API always passes one)
    assert ClipScorer(default_clip_path(), "ViT-B-32").model_name == "fastsam-clip-demo"


@pytest.mark.slow
def test_text_prompt_selects_the_right_object_on_held_out_scenes(scorer) -> None:
    """>= 100 objects of held-out scenes; candidates: all GT masks of the scene; target: caption unique
    in its scene and visible area >= MIN_AREA px. Measured: 273/291 = 93.8% (see MODEL_CARD.md)."""
    res = cd.text_accuracy(scorer, cd.scenes(HELD_OUT_SEED, 30), "gt", min_area=MIN_AREA)
    assert res.total >= 150
    print(f"held-out text accuracy: {res.correct}/{res.total} = {res.accuracy:.3f}")
    assert res.accuracy >= 0.8, res.misses[:20]
    assert res.total - res.correct == len(res.misses)
    # the wrong picks are (nearly all) the right colour: colour is easy, round shapes are not
    assert sum(got is not None and got.split()[1] == want.split()[1] for _, want, got in res.misses) >= 0.8 * len(
        res.misses
    )


@pytest.mark.slow
def test_text_accuracy_with_a_predictor_and_bad_candidates(scorer) -> None:
    """A predictor returning the GT masks in another order scores exactly like the GT candidates
    (right = IoU >= 0.5 with the target); a predictor returning only one mask gets at most one per scene."""
    scenes = list(cd.scenes(HELD_OUT_SEED, 3))
    gt = cd.text_accuracy(scorer, scenes, "gt")
    rev = cd.text_accuracy(scorer, scenes, lambda img: _reversed(scenes, img))
    assert gt.total >= 10 and (rev.correct, rev.total) == (gt.correct, gt.total)

    class One:
        def segment(self, img):
            _, anns = next(s for s in scenes if s[0] is img)
            return cd.gt_segments(anns[-1:], img.shape[:2])

    one = cd.text_accuracy(scorer, scenes, One())
    assert one.total == gt.total and one.correct <= 3
    with pytest.raises(FastSAMError, match="candidates must be"):
        cd.text_accuracy(scorer, scenes, "sam")


def _reversed(scenes, img) -> Segments:
    _, anns = next(s for s in scenes if s[0] is img)
    return cd.gt_segments(anns[::-1], img.shape[:2])


def test_training_crops_are_the_inference_crops() -> None:
    """Without augmentation, make_crops equals mask_crops + resize_crops of the GT masks (decoded here
    with pycocotools), for every object of >= min_area px, labelled with its colour and shape."""
    data = cd.make_crops(7, 2, 48, min_area=64, jpeg_p=0.0, mask_p=0.0)
    expected, labels = [], []
    for img, anns in cd.scenes(7, 2):
        keep = [a for a in anns if a["area"] >= 64]
        masks = np.stack(
            [
                mask_utils.decode(
                    {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
                ).astype(bool)
                for a in keep
            ]
        )
        seg = Segments.from_masks(masks, np.ones(len(keep)))
        expected.append(resize_crops(mask_crops(seg, img, range(len(keep))), (48, 48)))
        labels += [(a["color"], a["shape"]) for a in keep]
    np.testing.assert_array_equal(data.images, np.concatenate(expected))
    assert [(cd.COLORS[c], SHAPES[s]) for c, s in zip(data.color, data.shape)] == labels
    assert np.array_equal(data.label, data.color * 6 + data.shape)
    aug = cd.make_crops(7, 2, 48, min_area=64, jpeg_p=1.0, mask_p=1.0)
    assert aug.images.shape == data.images.shape and not np.array_equal(aug.images, data.images)


def test_multi_positive_loss_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0], [0.5, -1.0]])
    target = torch.tensor([0, 1, 0])
    e = math.exp
    col0 = -math.log((e(2.0) + e(0.5)) / (e(2.0) + e(1.0) + e(0.5)))  # images 0 and 2 are class 0
    col1 = -math.log(e(3.0) / (e(0.0) + e(3.0) + e(-1.0)))
    assert math.isclose(float(cd._multi_positive(logits, target)), (col0 + col1) / 2, rel_tol=1e-6)


@pytest.mark.slow
def test_train_save_load_roundtrip(tmp_path) -> None:
    """A few steps of a tiny config: the loss is finite and falls; the saved file loads through
    ClipScorer and scores exactly like the trained model rounded to fp16."""
    cfg = dict(
        cd.DEMO_CONFIG,
        name="tiny",
        embed_dim=16,
        vision_cfg={"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        text_cfg={"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    )
    torch.manual_seed(0)
    model = cd.build_clip(cfg)
    data = cd.make_crops(3, 3, 32)
    losses = cd.train(model, data, cd.TrainConfig(steps=30, batch=32, warmup=5, lr=3e-3), seed=0)
    assert len(losses) == 30 and np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5])
    path = cd.save_clip(model, cfg, tmp_path / "tiny.safetensors", {"note": "test"})
    s = ClipScorer(path)
    assert s.image_size == (32, 32) and s.model_name == "tiny" and s.tokenizer.context_length == 12
    half = cd.build_clip(cfg)
    half.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    half.eval()
    crops = list(data.images[:5])
    texts = ["a red star", "a blue bar"]
    with torch.no_grad():
        img = torch.nn.functional.normalize(half.encode_image(s.preprocess(crops)), dim=-1)
        txt = torch.nn.functional.normalize(half.encode_text(s.tokenizer(texts)), dim=-1)
    np.testing.assert_allclose(s.similarity(crops, texts), (txt @ img.T).numpy(), atol=1e-5)


def _tiny_state() -> dict[str, torch.Tensor]:
    return {"w": torch.zeros(2, dtype=torch.float16)}


@pytest.mark.parametrize(
    "config,message",
    [
        ("not json", "invalid fastsam-clip metadata"),
        (json.dumps({"embed_dim": 8, "vision_cfg": {}}), "invalid fastsam-clip metadata"),
        (
            json.dumps({"embed_dim": 8, "vision_cfg": {"timm_model_name": "resnet50"}, "text_cfg": {}}),
            "needs downloads",
        ),
        (json.dumps({"embed_dim": 8, "vision_cfg": {}, "text_cfg": {"hf_model_name": "bert"}}), "needs downloads"),
        (json.dumps({"embed_dim": 8, "vision_cfg": {}, "text_cfg": {}, "mean": [0.5]}), "mean must be 3 numbers"),
        (json.dumps({"embed_dim": 8, "vision_cfg": {"no_such_field": 1}, "text_cfg": {}}), "cannot build CLIP"),
        (
            json.dumps(
                {
                    "embed_dim": 8,
                    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
                    "text_cfg": {"context_length": 8, "width": 16, "heads": 2, "layers": 1},
                }
            ),
            "does not fit CLIP",
        ),
    ],
)
def test_bad_stored_config_is_refused(tmp_path, config, message) -> None:
    path = tmp_path / "bad.safetensors"
    save_file(_tiny_state(), str(path), metadata={"format": "fastsam-clip", "config": config})
    with pytest.raises(CheckpointError, match=message) as err:
        ClipScorer(path)
    assert "\n" not in str(err.value)


def _random_n_model(path) -> None:
    from fastsam.io.checkpoint import save_safetensors
    from fastsam.nn.model import build_model

    torch.manual_seed(0)
    m = build_model("n")
    save_safetensors(m.state_dict(), m.config, path)


@pytest.mark.slow
def test_cli_text_prompt_uses_the_shipped_clip(tmp_path, capsys) -> None:
    """No --clip-weights: the shipped demo CLIP is used (the random model's masks mean nothing)."""
    image = write_dataset(tmp_path / "scenes", 1, seed=HELD_OUT_SEED, size=(240, 320))[0]
    model = tmp_path / "n.safetensors"
    _random_n_model(model)
    out = tmp_path / "out"
    code = main(
        [
            "prompt",
            str(image),
            "--text",
            "a red star",
            "--model",
            str(model),
            "--imgsz",
            "320",
            "--conf",
            "0.01",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    records = json.loads((out / "sa_000001.json").read_text())
    assert isinstance(records, list) and (out / "sa_000001.png").stat().st_size > 0
    assert all(r["prompt"]["type"] == "text" and r["prompt"]["text"] == "a red star" for r in records)
    assert get_scorer(default_clip_path()).model_name == "fastsam-clip-demo"  # the one the CLI cached


def test_cli_without_a_shipped_clip_asks_for_weights(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(fastsam.weights, "DEMO_CLIP_FILE", "no-such-clip.safetensors")
    image = write_dataset(tmp_path / "scenes", 1, seed=1, size=(64, 64))[0]
    model = tmp_path / "n.safetensors"
    _random_n_model(model)
    code = main(["prompt", str(image), "--text", "a red star", "--model", str(model), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--text needs --clip-weights PATH" in err[0] and "no-such-clip" in err[0]
