"""SAM2 fine-tuning in the shared trainer on real video (vtest.avi person masks): data source, losses, train.py run."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import in_ci, require

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
# CI installs opencv-doc (Makefile: system-data), so there a missing vtest.avi fails instead of skipping.
needs_vtest = pytest.mark.skipif(
    not in_ci() and not os.path.isfile(VTEST), reason="vtest.avi needs apt-get install opencv-doc"
)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "zoo_cache"))


@needs_vtest
def test_vtest_person_masks_source():
    require("av")
    import zoo.data as zd
    import zoo.data.video  # noqa: F401

    train = zd.get_source("vtest_person_masks", split="train", max_frames=100)
    held_out = zd.get_source("vtest_person_masks", split="eval", max_frames=100)
    assert len(train.frames) == 16 and len(held_out.frames) == 4  # frames 0, 5, ..., 95; the last 20 % held out
    people = [int(labels.max()) for labels in train.labels]
    assert min(people) >= 1 and 3 <= np.median(people) <= 7  # spec: 3-5 people per frame, groups may merge
    example = train[0]
    assert example["image"].shape == (288, 384, 3) and example["image"].dtype == np.uint8
    assert example["mask"].shape == (288, 384) and example["mask"].sum() > 75


def test_prompts_and_losses():
    from models.sam2.tasks import PromptTransform, sam2_losses

    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 30:50] = 1
    transform = PromptTransform(32, train=False, box_prob=0.5)
    prompts = [transform({"image": np.zeros((40, 60, 3), np.uint8), "mask": mask}, np.random.default_rng(i))
               for i in range(20)]
    again = transform({"image": np.zeros((40, 60, 3), np.uint8), "mask": mask}, np.random.default_rng(3))
    np.testing.assert_array_equal(again["point_coords"], prompts[3]["point_coords"])  # deterministic per rng
    kinds = {tuple(p["point_labels"].tolist()) for p in prompts}
    assert kinds == {(1, -1), (2, 3)}
    for p in prompts:
        if p["point_labels"][0] == 1:  # the click lies inside the (resized) mask
            x, y = p["point_coords"][0].astype(int)
            assert p["mask"][y, x] == 1
    # A perfect, confident prediction with the right IoU and object score costs ~0; a click takes the best mask.
    target = jnp.zeros((2, 16, 16)).at[:, 4:12, 4:12].set(1.0)
    good = 20.0 * (2 * target - 1)
    masks = jnp.stack([-good, -good, good, -good], axis=1)  # only multimask output 2 is right
    ious = jnp.asarray([[0.0, 0.0, 1.0, 0.0]] * 2)
    _total, terms, best = sam2_losses(masks, ious, jnp.full((2, 1), 20.0), target, jnp.asarray([True, False]))
    np.testing.assert_allclose(best[0], good[0])
    assert float(terms["loss_mask"]) > 0  # the box example supervises token 0, which is wrong
    one, _, _ = sam2_losses(masks[:1], ious[:1], jnp.full((1, 1), 20.0), target[:1], jnp.asarray([True]))
    assert float(one) < 0.4  # only the IoU-L1 of the two wrong multimask outputs (supervise_all_iou) remains


def _train(tmp_path, variant: str, *, steps: int, timeout: int):
    """Run train.py on configs/sam2.py:<variant> in a subprocess for `steps` steps; returns the workdir."""
    workdir = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config", os.path.join(ROOT, f"configs/sam2.py:{variant}"),
           "--workdir", str(workdir), f"--config.num_train_steps={steps}"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@needs_vtest
def test_train_vtest_fast_and_reload(tmp_path):
    require("av")
    from zoo.train.metrics import read_metrics

    workdir = _train(tmp_path, "vtest_fast", steps=6, timeout=400)
    losses = [r["train/loss"] for r in read_metrics(str(workdir)) if "train/loss" in r]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses

    import zoo
    from models.sam2.predictor import SAM2ImagePredictor

    model = zoo.create_model("sam2_hiera_t", pretrained=str(workdir))
    assert model.config.image_size == 128  # the builder overrides come back from the checkpoint metadata
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(np.zeros((96, 128, 3), np.uint8))
    masks, scores, _ = predictor.predict(point_coords=[[60, 40]], point_labels=[1])
    assert masks.shape == (3, 96, 128) and np.isfinite(scores).all()


# ----------------------------------------------------------------------------------------------------------------------
# Multi-frame training with memory (task video_segmentation)
# ----------------------------------------------------------------------------------------------------------------------


@needs_vtest
def test_vtest_person_clips_follow_one_person():
    require("av")
    import zoo.data as zd
    import zoo.data.video  # noqa: F401

    clips = zd.get_source("vtest_person_clips", split="train", clip_length=4, max_frames=100)
    assert len(clips) >= 8
    for index in range(0, len(clips), max(1, len(clips) // 5)):
        example = clips[index]
        assert example["frames"].shape == (4, 288, 384, 3) and example["masks"].shape == (4, 288, 384)
        masks = example["masks"].astype(bool)
        assert masks.sum(axis=(1, 2)).min() > 75
        for a, b in itertools.pairwise(masks):  # consecutive masks overlap: the same person
            assert (a & b).sum() / (a | b).sum() >= 0.2


def _clip_batch(length: int, size: int, mask_prompt: bool = False):
    from models.sam2.tasks import ClipTransform

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (length, 96, 128, 3), dtype=np.uint8)
    masks = np.zeros((length, 96, 128), np.uint8)
    for t in range(length):
        masks[t, 30:70, 40 + 4 * t:90 + 4 * t] = 1
    transform = ClipTransform(size, train=False, pt_prob=0.0 if mask_prompt else 1.0, box_prob=0.0)
    examples = [transform({"frames": frames, "masks": masks}, np.random.default_rng(k)) for k in range(2)]
    return {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0]}


def _video_task(length: int, size: int, freeze: bool = False):
    from configs.sam2 import get_config
    from models.sam2.tasks import VideoSegmentationTask

    config = get_config("vtest_video_fast")
    config.data.image_size = size
    config.data.clip_length = length
    config.model.freeze_image_encoder = freeze
    return VideoSegmentationTask(config)


def _sam2_tiny(size: int):
    from flax import nnx

    import zoo

    model = zoo.create_model("sam2_hiera_t", image_size=size, rngs=nnx.Rngs(0))
    last = model.sam_mask_decoder.pred_obj_score_head.layers[-1]
    last.bias.set_value(last.bias.get_value() + 10.0)  # "object present", so masks are not gated to -1024
    return model


def test_one_frame_clip_equals_the_image_task():
    """With T = 1 and a click, the clip loss is the single-frame segmentation loss (same heads, same losses)."""
    from models.sam2.tasks import PromptableSegmentationTask

    task = _video_task(1, 128)
    batch = _clip_batch(1, 128)
    model = _sam2_tiny(128)
    total, terms = task.loss(model, batch)
    image_batch = {"image": batch["image"][:, 0], "mask": batch["mask"][:, 0], "point_coords": batch["point_coords"],
                   "point_labels": batch["point_labels"]}
    expected, expected_terms = PromptableSegmentationTask(task.config).loss(model, image_batch)
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-4)
    for key in ("loss_mask", "loss_dice", "loss_iou", "loss_class"):
        np.testing.assert_allclose(float(terms[key]), float(expected_terms[key]), rtol=1e-4, atol=1e-6)


def test_clip_loss_trains_the_memory_path():
    """Frame 0 prompted by its mask (the mask-as-output path; the click path is the one-frame test's): the tracked
    frames' losses reach memory attention, the memory encoder and the object-pointer projection; the frozen image
    encoder gets nothing."""
    import jax
    from flax import nnx

    task = _video_task(3, 128, freeze=True)
    batch = _clip_batch(3, 128, mask_prompt=True)
    model = _sam2_tiny(128)
    grads = nnx.grad(lambda m: task.loss(m, batch)[0])(model)
    norm = lambda tree: float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))
    for name in ("memory_attention", "memory_encoder", "obj_ptr_proj", "maskmem_tpos_enc"):
        assert norm(getattr(grads, name)) > 0, name
    assert norm(grads.image_encoder) == 0.0


@needs_vtest
def test_train_vtest_video_fast(tmp_path):
    require("av")
    from zoo.train.metrics import read_metrics

    workdir = _train(tmp_path, "vtest_video_fast", steps=6, timeout=600)
    records = [r for r in read_metrics(str(workdir)) if "train/loss" in r]
    losses = [r["train/loss"] for r in records]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses
    assert all(0.0 <= r["train/miou_tracked"] <= 1.0 for r in records)
