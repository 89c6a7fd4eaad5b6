"""ILA (models/ila): golden parity against the official code (fixtures made from Francis-Rings/ILA, see
models/ila/README.md), conversion, CLIP initialisation, parameter counts and groups, input checks."""

from __future__ import annotations

import json
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import zoo
from models.clip.model import VisionTower
from models.ila import (
    FROZEN_PATTERNS,
    TRAINABLE_PATTERNS,
    ILABlock,
    ILAVideoClassifier,
    alignment_mask,
    convert_ila,
    create_from_official,
    frozen_patterns,
    group_param_counts,
    jitter_delta,
    load_clip_weights,
    official_param_groups,
    param_group,
    read_official_checkpoint,
)
from models.layers import sharding_scope
from tests.helpers import require
from zoo.convert import ConversionError, flat_paths, merge_into_model

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
EPS32 = float(np.finfo(np.float32).eps)


def tolerance(ref: np.ndarray) -> float:
    """Absolute tolerance from the magnitude of the compared values: 64 f32 ulps of the largest one (the fixtures'
    values reach ~30, their errors ~1e-6), capped at the issue's 1e-4."""
    return min(1e-4, 64 * EPS32 * max(1.0, float(np.abs(ref).max())))


def assert_close(ours, ref, what: str) -> float:
    ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    err = float(np.abs(ours - ref).max())
    assert err <= tolerance(ref), f"{what}: max abs diff {err:.3g} > {tolerance(ref):.3g}"
    return err


class Fixture:
    """An official golden fixture: the state dict (f16-exact values stored as float16), inputs, outputs, config."""

    def __init__(self, name: str):
        with np.load(os.path.join(FIXTURES, f"ila_{name}.npz"), allow_pickle=False) as data:
            self.data = {k: data[k] for k in data.files}
        self.name = name
        self.cfg = json.loads(str(self.data["config_json"]))
        self.state = {k[len("state/"):]: (v.astype(np.float32) if v.dtype == np.float16 else v)
                      for k, v in self.data.items() if k.startswith("state/")}
        self.video = jnp.asarray(self.data["video_btchw"].astype(np.float32).transpose(0, 1, 3, 4, 2))
        self.text = jnp.asarray(self.data["text"])

    def kwargs(self) -> dict:
        cfg = self.cfg
        heads = cfg["width"] // cfg["head_dim"]
        kw = {"num_frames": cfg["frames"], "img_size": cfg["img_size"], "patch_size": cfg["patch_size"],
              "vision_width": cfg["width"], "vision_layers": cfg["layers"], "vision_heads": heads,
              "embed_dim": cfg["embed_dim"], "mit_heads": cfg["embed_dim"] // cfg["head_dim"],
              "ila_hidden": cfg["hidden"], "attention_impl": "xla"}
        if self.name == "k400":
            kw.update(head="xclip", interactive_form="separable", context_length=cfg["context_length"],
                      vocab_size=cfg["vocab_size"], text_width=cfg["text_width"], text_layers=cfg["text_layers"],
                      text_heads=cfg["text_heads"], prompt_heads=cfg["embed_dim"] // cfg["head_dim"])
        else:
            kw.update(head="linear", interactive_form="full", num_classes=cfg["num_classes"])
        return kw

    def abstract(self, **overrides):
        return nnx.eval_shape(lambda: ILAVideoClassifier(rngs=nnx.Rngs(0), **dict(self.kwargs(), **overrides)))

    def model(self, **overrides):
        # The official training dict layout, with DataParallel's `module.` prefix.
        checkpoint = {"model": {"module." + k: v for k, v in self.state.items()}, "epoch": 3}
        return convert_ila(checkpoint, self.abstract(**overrides))

    def call(self, model, train: bool):
        """The model on the fixture's inputs (jitted: one compile instead of one per eager op)."""
        text = self.text if self.name == "k400" else None
        # The fixture's train pass ran at epoch 30 (one halving of the jitter step).
        return _forward(model, self.video, text, train=train, epoch=30 if train else None)


@nnx.jit(static_argnames=("train", "epoch"))
def _forward(model, video, text, *, train, epoch):
    extra = {} if text is None else {"text_tokens": text}
    return model(video, train=train, epoch=epoch, **extra)


@pytest.fixture(scope="module", params=["k400", "ssv2"])
def fixture(request):
    return Fixture(request.param)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_official_parity(fixture, mode):
    """Points, masks, mutual-information tokens, aligned / interactive features, cosine losses, logits and (train)
    BatchNorm running statistics equal the official model's."""
    # SSv2's head dropout was off in the official train pass (deterministic logits).
    model = fixture.model(head_dropout=0.0)
    data = fixture.data
    out = fixture.call(model, mode == "train")
    errors = {"logits": assert_close(out.logits, data[f"{mode}/logits"], "logits"),
              "cos_losses": assert_close(out.cos_losses, data[f"{mode}/cos_losses"], "cosine losses")}
    np.testing.assert_allclose(float(out.aux_loss), float(data[f"{mode}/cos_losses"].sum()), rtol=1e-6)
    for i, layer in enumerate(out.layers):
        key = f"{mode}/layer{i}"
        errors[f"points{i}"] = assert_close(layer.points, data[f"{key}/points"], f"{key} points")
        assert_close(layer.mask_pre, data[f"{key}/mask_pre"], f"{key} mask (earlier frame)")
        assert_close(layer.mask_cur, data[f"{key}/mask_cur"], f"{key} mask (later frame)")
        pairs = data[f"{key}/pairs"][0]  # (1, B, P, 2D) -> (B, P, 2D): [pre | cur]
        d = pairs.shape[-1] // 2
        assert_close(layer.token_pre, pairs[..., :d], f"{key} MI token (earlier frame)")
        assert_close(layer.token_cur, pairs[..., d:], f"{key} MI token (later frame)")
        if f"{key}/aligned_frame" in data:
            assert_close(layer.aligned, data[f"{key}/aligned_frame"], f"{key} aligned features")
            b, t, length, width = layer.interactive.shape
            ours = np.asarray(layer.interactive).reshape(b * t, length, width).transpose(1, 0, 2)  # official (L, BT, D)
            assert_close(ours, data[f"{key}/interactive_feature"], f"{key} interactive feature")
    assert errors["logits"] < 1e-4
    if mode == "train":
        running = dict(fixture.state)
        running.update({k[len("train/running/"):]: v for k, v in data.items() if k.startswith("train/running/")})
        want = flat_paths(nnx.state(convert_ila(running, fixture.abstract()), nnx.BatchStat))
        have = flat_paths(nnx.state(model, nnx.BatchStat))
        batch_norms = 5 if fixture.name == "k400" else 4  # per ILA module: 3 (K400) / 2 (SSv2) interactive + 2
        assert set(have) == set(want) and len(have) == 2 * batch_norms * fixture.cfg["layers"]
        for path in have:
            assert_close(have[path], want[path], f"running statistic {path}")
    if fixture.name == "k400":
        assert_close(model.encode_text(fixture.text), data["eval/text_features"], "text features")
    if mode == "eval":
        features = nnx.jit(lambda m, v: m.forward_features(v))(model, fixture.video)
        np.testing.assert_allclose(np.asarray(features), np.asarray(out.video_features), atol=1e-6)


def test_points_masks_and_jitter_schedule():
    # The spec's 14x14 row at p = 0.
    row = np.asarray(alignment_mask(jnp.zeros((2,)), 14))[6]
    np.testing.assert_allclose(row[:6], [0, 0.106, 0.337, 0.567, 0.798, 1.0], atol=1e-3)
    np.testing.assert_allclose(row, row[::-1], atol=1e-6)
    # The profile reaches zero past |d| ~ 0.917 and is 1 within 0.25 of the point (x shifts columns, y rows).
    mask = np.asarray(alignment_mask(jnp.array([1.0, -1.0]), 9))
    assert mask[0, -1] == mask[0, -2] == 1 and mask[0, 0] == mask[-1, -1] == mask[-1, 0] == 0
    assert [jitter_delta(e) for e in (None, 0, 29, 30, 31, 33)] == [0.2, 0.2, 0.2, 0.1, 0.05, 0.2 / 16]
    traced = jax.jit(jitter_delta)(jnp.arange(28, 34))
    np.testing.assert_array_equal(np.asarray(traced), np.float32([0.2, 0.2, 0.1, 0.05, 0.025, 0.0125]))


def test_official_checkpoint_file_with_yacs_config(tmp_path, monkeypatch):
    """The official `.pth` pickles a yacs CfgNode next to the weights: read without yacs, converted, same logits."""
    torch = require("torch")
    yacs, config_module = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):  # what yacs pickles: a dict subclass with attributes
        def __init__(self, items=None):
            super().__init__(items or {})
            self.__dict__["__immutable__"] = True

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    config_module.CfgNode, yacs.config = CfgNode, config_module
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", config_module)
    fixture = Fixture("ssv2")
    path = tmp_path / "ssv2_tiny.pth"
    torch.save({"model": {k: torch.from_numpy(np.array(v)) for k, v in fixture.state.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "betas": (0.9, 0.98)}]},
                "max_accuracy": 12.5, "epoch": 7,
                "config": CfgNode({"TRAIN": CfgNode({"LR": 8e-6}), "MODEL": CfgNode({"ARCH": "ViT-B/16"})})}, path)
    monkeypatch.delitem(sys.modules, "yacs.config")
    monkeypatch.delitem(sys.modules, "yacs")
    checkpoint = read_official_checkpoint(path)
    assert checkpoint["config"] == {"TRAIN": {"LR": 8e-6}, "MODEL": {"ARCH": "ViT-B/16"}} and checkpoint["epoch"] == 7
    model = convert_ila(checkpoint, fixture.abstract())
    assert_close(fixture.call(model, False).logits, fixture.data["eval/logits"], "logits from the .pth")
    with pytest.raises(ValueError, match="refusing|Unsupported|weights_only"):
        zoo.convert.read_checkpoint(path)


def test_create_from_official_reads_the_file(tmp_path):
    fixture = Fixture("k400")
    path = tmp_path / "tiny.npz"
    np.savez(path, **{"module." + k: v for k, v in fixture.state.items()})
    model = create_from_official("ila_vit_b32_k400_8f", path, **fixture.kwargs())
    assert_close(fixture.call(model, False).logits, fixture.data["eval/logits"], "logits")
    # A plain state-dict file also loads through the registry.
    model = zoo.create_model("ila_vit_b32_k400_8f", pretrained=str(path), **fixture.kwargs())
    np.testing.assert_array_equal(model.mit.positional_embedding[...], fixture.state["mit.positional_embedding"])


def test_conversion_reports_every_problem_at_once():
    fixture = Fixture("k400")
    state = dict(fixture.state)
    del state["visual.transformer.resblocks.1.message_attn.prediction_block.5.running_var"]
    state["visual.transformer.resblocks.0.message_attn.fc.weight"] = np.zeros((3, 3), np.float32)
    state["mit.classify_head.2.weight"] = np.zeros((400, 32), np.float32)  # an SSv2 key in a K400 model
    state["visual.transformer.resblocks.0.message_attn.extra"] = np.zeros(2, np.float32)
    with pytest.raises(ConversionError) as info:
        convert_ila(state, fixture.abstract())
    message = str(info.value)
    for needle in ("prediction_block.conv2.bn.var", "message_attn.fc.kernel", "mit.classify_head",
                   "message_attn.extra", "missing", "mis-shaped"):
        assert needle in message, (needle, message)
    # The SSv2 layout does not fit the K400 interactive block (and vice versa).
    with pytest.raises(ConversionError, match="interactive_block"):
        convert_ila(Fixture("ssv2").state, Fixture("ssv2").abstract(interactive_form="separable"))


def _clip_state_dict(fixture: Fixture) -> dict[str, np.ndarray]:
    """The OpenAI-CLIP part of an official ILA state dict (CLIP's own key names)."""
    ila_only = ("message_", "temporal_", "mit.", "prompts_")
    return {k: v for k, v in fixture.state.items() if not any(s in k for s in ila_only)}


def test_init_from_clip_weights():
    """`load_clip_weights` fills the CLIP towers (OpenAI key names) and leaves every ILA / MIT / prompt parameter as
    it was; the SSv2 model (no text tower, another grid) skips the text keys and resamples the position table."""
    k400 = Fixture("k400")
    clip_sd = {k: np.asarray(v * 2) for k, v in _clip_state_dict(k400).items()}  # not the model's values
    assert "visual.conv1.weight" in clip_sd and "token_embedding.weight" in clip_sd
    model = k400.model()
    before = flat_paths(nnx.state(model, nnx.Param))
    load_clip_weights(model, {"state_dict": clip_sd})
    after = flat_paths(nnx.state(model, nnx.Param))
    changed = sorted(p for p in after if not np.array_equal(after[p], before[p]))
    assert changed and all(param_group(p) == "frozen" and not p.startswith("prompts_") for p in changed)
    np.testing.assert_array_equal(after["logit_scale"], 2 * before["logit_scale"])
    np.testing.assert_array_equal(after["visual.transformer.resblocks.1.attn.qkv.kernel"],
                                  2 * before["visual.transformer.resblocks.1.attn.qkv.kernel"])
    untouched = [p for p in after if param_group(p) != "frozen" or p.startswith("prompts_")]
    assert len(changed) + len(untouched) == len(after)
    ssv2 = Fixture("ssv2").model()
    load_clip_weights(ssv2, clip_sd)
    assert ssv2.visual.positional_embedding[...].shape == (1 + 4 * 4, 32)
    np.testing.assert_array_equal(ssv2.visual.patch_embed.proj.kernel[...], model.visual.patch_embed.proj.kernel[...])
    with pytest.raises(ConversionError, match="ln_post"):
        load_clip_weights(ssv2, {k: v for k, v in clip_sd.items() if "ln_post" not in k})


def test_fresh_model_starts_as_clip():
    """Zero-initialised skip FCs and last point layer: training starts as plain CLIP with the points at the centre."""
    def build():
        with sharding_scope():
            return ILABlock(16, 2, num_frames=3, grid_size=(4, 4), ila_hidden=8, attention_impl="xla",
                            rngs=nnx.Rngs(0))

    block = nnx.jit(build)()  # one compile, not one per eager initialiser
    for linear in (block.temporal_skip_fc, block.temporal_skip_align_fc, block.message_attn.prediction_block.fc2):
        assert not np.any(np.asarray(linear.kernel[...])) and not np.any(np.asarray(linear.bias[...]))
    assert np.any(np.asarray(block.message_fc.kernel[...]))
    # With zero skip FCs (the converted fixture weights otherwise) the ILA tower is the CLIP tower, frame by frame.
    fixture = Fixture("ssv2")
    state = {k: (np.zeros_like(v) if "temporal_skip" in k else v) for k, v in fixture.state.items()}
    model = convert_ila(state, fixture.abstract())
    cfg = fixture.cfg
    def build_clip():
        with sharding_scope():
            return VisionTower(img_size=cfg["img_size"], patch_size=cfg["patch_size"], width=cfg["width"],
                               layers=cfg["layers"], heads=cfg["width"] // cfg["head_dim"],
                               output_dim=cfg["embed_dim"], attention_impl="xla", rngs=nnx.Rngs(0))

    clip = nnx.eval_shape(build_clip)
    clip_paths = flat_paths(nnx.state(clip, nnx.Param))
    ila_paths = flat_paths(nnx.state(model.visual, nnx.Param))
    clip = merge_into_model(clip, {p: np.asarray(ila_paths[p]) for p in clip_paths})
    frames = fixture.video.reshape(-1, *fixture.video.shape[2:])
    ila_cls, clip_cls = nnx.jit(lambda m, c, x: (m.visual.forward_video(x)[0], c(x)))(model, clip, frames)
    assert_close(ila_cls, clip_cls, "class embeddings vs plain CLIP")


def _counts(name: str, **overrides) -> dict[str, int]:
    return group_param_counts(nnx.state(nnx.eval_shape(lambda: zoo.create_model(name, **overrides)), nnx.Param))


def _full_counts(name: str, vision_layers: int, text_layers: int) -> dict[str, int]:
    """Per-group counts of the registered config via `nnx.eval_shape` (no allocation) of the same config at depths
    1 and 2: every block of a tower has the same parameters, so the full count is linear in the depths (abstract
    init traces in time quadratic in the number of variables, so the full 24-layer trace would take a minute)."""
    base = _counts(name, vision_layers=1, text_layers=1)
    vision = _counts(name, vision_layers=2, text_layers=1)
    text = _counts(name, vision_layers=1, text_layers=2)
    return {g: base[g] + (vision_layers - 1) * (vision[g] - base[g]) + (text_layers - 1) * (text[g] - base[g])
            for g in base}


def test_param_counts_of_full_configs():
    """Optimised parameters per official group against the spec (measured from the official code): B ~43.6M =
    26.29 + 14.17 + 3.16, L/14 ~125M = 67.70 + 50.38 + 7.09; one ILA module 1.599M (B) / 1.769M (L)."""
    counts = _full_counts("ila_vit_b16_k400_8f", 12, 12)
    assert counts == {"message": 26_290_992, "temporal": 14_174_208, "mit": 3_156_480, "frozen": 156_318_721}
    assert round(sum(counts[g] for g in TRAINABLE_PATTERNS) / 1e6, 1) == 43.6
    counts = _full_counts("ila_vit_l14_k400_8f", 24, 12)
    assert [round(counts[g] / 1e6, 2) for g in ("message", "temporal", "mit")] == [67.70, 50.38, 7.09]
    assert round(sum(counts[g] for g in TRAINABLE_PATTERNS) / 1e6) == 125
    for name, want in (("ila_vit_b16_k400_8f", 1_598_788), ("ila_vit_l14_k400_8f", 1_769_028)):
        model = nnx.eval_shape(lambda name=name: zoo.create_model(name, vision_layers=1, text_layers=1))
        module = nnx.state(model.visual.transformer.resblocks[0].message_attn, nnx.Param)
        assert sum(x.size for x in jax.tree.leaves(module)) == want, name


def test_official_param_groups_select_the_trainable_parameters():
    model = Fixture("k400").abstract()
    paths = list(flat_paths(nnx.state(model, nnx.Param)))
    groups = official_param_groups()
    assert [v for g in groups for v in (g["lr"], g["weight_decay"])] == pytest.approx([5e-4, 1e-2, 8e-5, 1e-3, 4e-4, 3e-3])
    assert all(g["min_lr"] == pytest.approx(8e-8) for g in groups)
    import re

    frozen = [p for p in paths if any(re.fullmatch(f, p) for f in FROZEN_PATTERNS)]
    trainable = [p for p in paths if p not in frozen]
    assert all(param_group(p) != "frozen" for p in trainable) and all(param_group(p) == "frozen" for p in frozen)
    assert all(p.startswith(("visual.transformer.resblocks.", "mit.")) for p in trainable)
    assert all(any(s in p for s in ("message_", "temporal_")) for p in trainable if p.startswith("visual."))
    for part in ("visual.patch_embed.proj.kernel", "visual.transformer.resblocks.0.attn.qkv.kernel",
                 "visual.transformer.resblocks.1.mlp.fc2.bias", "visual.ln_post.scale", "visual.proj",
                 "text.token_embedding.embedding", "logit_scale", "prompts_generator.alpha", "prompts_visual_proj"):
        assert part in frozen, part
    for part in ("visual.transformer.resblocks.0.message_attn.prediction_block.fc2.kernel",
                 "visual.transformer.resblocks.1.temporal_skip_align_fc.kernel", "mit.positional_embedding",
                 "mit.resblocks.0.attn.qkv.kernel", "visual.transformer.resblocks.0.message_ln.scale"):
        assert part in trainable, part
    # Training the prompts too (the official code's commented-out group).
    with_prompts = [p for p in paths if not any(re.fullmatch(f, p) for f in frozen_patterns(train_prompts=True))]
    assert sorted(set(with_prompts) - set(trainable)) == sorted(p for p in paths if p.startswith("prompts_"))
    assert official_param_groups(train_prompts=True)[-1]["pattern"] == "prompts_.*"
    # Layer ids (layer-wise LR decay): ILA parts share their CLIP block's id.
    assert model.layer_id("visual.transformer.resblocks.1.message_attn.conv.kernel") == 2
    assert model.layer_id("visual.patch_embed.proj.kernel") == 0 == model.layer_id("text.token_embedding.embedding")
    assert model.layer_id("mit.positional_embedding") == model.max_layer_id() == 3
    # The zoo optimizer builds with these settings.
    import ml_collections

    from zoo.train.optim import build_optimizer

    config = ml_collections.ConfigDict({"name": "adamw", "lr": 8e-6, "weight_decay": 3e-3, "b2": 0.98,
                                        "groups": groups, "frozen": FROZEN_PATTERNS})
    tx, _ = build_optimizer(config, total_steps=10)
    assert tx is not None


def test_training_step_under_jit_updates_batch_stats():
    fixture = Fixture("ssv2")
    model = fixture.model()
    before = flat_paths(nnx.state(model, nnx.BatchStat))

    @nnx.jit
    def loss_fn(model, video, epoch):
        def loss(model):
            out = model(video, train=True, epoch=epoch, rngs=nnx.Rngs(dropout=0))
            return out.logits.mean() + out.aux_loss

        return nnx.grad(loss)(model)

    grads = loss_fn(model, fixture.video, jnp.int32(31))
    after = flat_paths(nnx.state(model, nnx.BatchStat))
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    flat = flat_paths(grads)
    assert float(np.abs(flat["visual.transformer.resblocks.0.message_attn.prediction_block.fc2.kernel"]).max()) > 0


def test_bfloat16_compute():
    fixture = Fixture("ssv2")
    model = convert_ila(fixture.state, fixture.abstract(dtype=jnp.bfloat16))
    out = fixture.call(model, False)
    assert out.logits.dtype == jnp.bfloat16 and model.mit.positional_embedding[...].dtype == jnp.float32
    reference = fixture.data["eval/logits"]
    assert np.abs(np.asarray(out.logits, np.float32) - reference).max() < 0.1 * np.abs(reference).max()


def test_paper_concat_fusion_option():
    fixture = Fixture("ssv2")
    model = fixture.model(fusion="concat")
    out = fixture.call(model, False)
    assert out.logits.shape == (2, fixture.cfg["num_classes"]) and np.isfinite(np.asarray(out.logits)).all()
    reference = fixture.data["eval/logits"]
    assert np.abs(np.asarray(out.logits) - reference).max() > 1e-3  # another model than the released one
    with pytest.raises(ValueError, match="fusion"):
        fixture.abstract(fusion="pool")


def test_bad_inputs_say_what_to_fix():
    fixture = Fixture("k400")
    model = fixture.model()
    video = fixture.video
    with pytest.raises(ValueError, match="4 frames|num_frames=4"):
        model(video[:, :3], text_tokens=fixture.text)
    with pytest.raises(ValueError, match="img_size=32"):
        model(video[:, :, :32, :32], text_tokens=fixture.text)
    with pytest.raises(ValueError, match="rank 4.*video\\[None\\]"):
        model(video[0], text_tokens=fixture.text)
    with pytest.raises(ValueError, match="transpose"):
        model(video.transpose(0, 1, 4, 2, 3), text_tokens=fixture.text)
    with pytest.raises(ValueError, match="dtype"):
        model(video.astype(jnp.int32), text_tokens=fixture.text)
    with pytest.raises(ValueError, match="text_tokens"):
        model(video)
    with pytest.raises(ValueError, match="num_frames must be >= 2"):
        fixture.abstract(num_frames=1)
    with pytest.raises(ValueError, match="num_classes"):
        fixture.abstract(head="linear")
    with pytest.raises(ValueError, match="interactive_form"):
        fixture.abstract(interactive_form="depthwise")
    with pytest.raises(ValueError, match=">= 4x4"):
        fixture.abstract(img_size=24)


def test_registry_entries():
    names = zoo.list_models("ila_*")
    assert len(names) == 10 and "ila_vit_b16_k400_8f" in names and "ila_vit_l14_336_ssv2_16f" in names
    cfg = zoo.pretrained_cfg("ila_vit_l14_336_k400_16f")
    assert cfg.input_size == (336, 336, 3) and cfg.num_classes == 400 and cfg.weights_source == "manual"
    assert cfg.manual_url.startswith("https://drive.google.com/") and cfg.manual_filename.endswith(".pth")
    assert zoo.pretrained_cfg("ila_vit_b16_ssv2_8f").num_classes == 174
    abstract = nnx.eval_shape(lambda: zoo.create_model("ila_vit_b16_ssv2_16f", vision_layers=1))
    assert abstract.mit.positional_embedding.shape == (1, 16, 512) and abstract.text is None
    assert abstract.mit.classify_head.fc.kernel.shape == (512, 174)
    assert abstract.visual.transformer.resblocks[0].message_attn.interactive_block.form == "full"


@pytest.mark.parametrize("dataset", ["k400", "ssv2"])
def test_full_size_official_keys_convert(dataset):
    """Every key of the official full-size ILA-B/16 (8 frames) state dict (names and shapes from the official
    `XCLIP` of branch master / SSV2, saved in the fixture) maps onto our model: shown at depth 1 (block 0 of each
    tower, the rest is the same per block), with zero tensors of the official shapes."""
    import ast
    import re

    from models.ila import ila_rules
    from models.ila.convert import IGNORED
    from zoo.convert import map_state_dict

    with np.load(os.path.join(FIXTURES, "ila_official_b16_keys.npz"), allow_pickle=False) as data:
        keys, shapes = data[f"{dataset}/keys"], data[f"{dataset}/shapes"]
    assert len(keys) == (959 if dataset == "k400" else 697)
    state_dict = {str(k): np.zeros(ast.literal_eval(str(s)), np.float32) for k, s in zip(keys, shapes)
                  if not re.match(r"(visual\.)?transformer\.resblocks\.([1-9]|1[01])\.", str(k))}
    name = "ila_vit_b16_k400_8f" if dataset == "k400" else "ila_vit_b16_ssv2_8f"
    abstract = nnx.eval_shape(lambda: zoo.create_model(name, vision_layers=1, text_layers=1))
    form = "separable" if dataset == "k400" else "full"
    arrays = map_state_dict(state_dict, ila_rules(form), nnx.state(abstract, nnx.Not(nnx.RngState)), ignore=IGNORED)
    batch_norms = 5 if dataset == "k400" else 4
    assert len(arrays) == len(state_dict) - batch_norms  # all but num_batches_tracked
    assert arrays["visual.transformer.resblocks.0.message_attn.prediction_block.fc1.kernel"].shape == (1, 64, 64)


def test_depthwise_conv_equals_the_grouped_conv_forward_and_backward():
    from models.ila.align import depthwise_conv

    channels = 6
    conv = nnx.Conv(channels, channels, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=channels,
                    rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, 7, channels))
    kernel, bias = conv.kernel[...], conv.bias[...]

    def grouped(k, b, x):
        return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=channels) + b

    weights = jax.random.normal(jax.random.key(2), (2, 5, 7, channels))
    ref = grouped(kernel, bias, x)
    ours = depthwise_conv(x, kernel, bias)
    bound = 16 * float(np.finfo(np.float32).eps) * float(jnp.abs(ref).max()) * 3
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=bound)
    grads_ref = jax.grad(lambda k, b, x: (grouped(k, b, x) * weights).sum(), argnums=(0, 1, 2))(kernel, bias, x)
    grads = jax.grad(lambda k, b, x: (depthwise_conv(x, k, b) * weights).sum(), argnums=(0, 1, 2))(kernel, bias, x)
    for g, r in zip(grads, grads_ref, strict=True):
        tol = 64 * float(np.finfo(np.float32).eps) * float(jnp.abs(r).max())
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=tol)
