"""MaskAlign teachers against the installed Hugging Face `transformers` (tiny random models, torch on CPU), and the
official checkpoint format (a `.pth` that pickles `args`)."""

from __future__ import annotations

import argparse
import fractions
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.maskalign import convert as ma_convert
from models.maskalign.teacher import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, VitTeacher, build_clip_teacher
from models.vit.model import VisionTransformer
from tests.helpers import require
from tests.models.test_maskalign import FIXTURES, abstract_model, bound, load_case
from zoo.convert import CheckpointReadError, merge_into_model


def _randomise(model, torch, seed: int) -> dict[str, np.ndarray]:
    """Re-draw every tensor so that no branch is negligible; returns the state dict as numpy."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if "position_ids" in key:
            continue
        if value.ndim >= 2:
            new = torch.randn(value.shape, generator=gen) / np.sqrt(np.prod(value.shape[1:]))
        elif key.endswith("bias"):
            new = 0.1 * torch.randn(value.shape, generator=gen)
        elif "class_embedding" in key:
            new = torch.randn(value.shape, generator=gen)
        else:
            new = 1 + 0.2 * torch.randn(value.shape, generator=gen)
        if "embedding" in key or "cls_token" in key:
            new = 0.5 * torch.randn(value.shape, generator=gen)
        state[key] = new
    model.load_state_dict(state, strict=False)
    return {k: v.numpy() for k, v in model.state_dict().items()}


def _images(size: int) -> np.ndarray:
    return np.asarray(jax.random.normal(jax.random.key(0), (2, size, size, 3)), np.float32)


def _compare(hf_out, ours, width: int, depth: int):
    hf_hidden = np.stack([h.numpy() for h in hf_out.hidden_states])
    hidden = np.stack(ours.hidden_states)
    assert hidden.shape == hf_hidden.shape
    assert float(np.max(np.abs(hidden - hf_hidden))) <= bound(hf_hidden, 4 * width, depth)
    importance = hf_out.attentions[-1][:, :, 0, 1:].mean(1).numpy()
    assert float(np.max(np.abs(np.asarray(ours.cls_attention) - importance))) <= bound(importance, 4 * width, depth)


def test_clip_teacher_matches_hf_clip_vision_model():
    torch = require("torch")
    transformers = require("transformers")
    config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                                           num_attention_heads=4, image_size=32, patch_size=8,
                                           attn_implementation="eager")
    hf = transformers.CLIPVisionModel(config).eval()
    state = _randomise(hf, torch, 0)
    images = _images(32)  # ImageNet-normalised, as the student's batch
    clip_input = (np.asarray(IMAGENET_STD, np.float32) * images + np.asarray(IMAGENET_MEAN, np.float32)
                  - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    with torch.no_grad():
        hf_out = hf(pixel_values=torch.from_numpy(clip_input).permute(0, 3, 1, 2), output_hidden_states=True,
                    output_attentions=True)
    abstract = nnx.eval_shape(lambda: build_clip_teacher(img_size=32, patch_size=8, width=32, layers=2, heads=4,
                                                         rngs=nnx.Rngs(0)))
    # transformers 5.x CLIPVisionModel keys (no prefix) and a 4.x CLIPModel's (`vision_model.`, text side ignored).
    for checkpoint in (state, {**{f"vision_model.{k}": v for k, v in state.items()},
                               "text_model.embeddings.token_embedding.weight": np.zeros((4, 8), np.float32),
                               "logit_scale": np.zeros((), np.float32)}):
        teacher = ma_convert.convert_hf_clip_vision(checkpoint, abstract)
        _compare(hf_out, jax.jit(lambda t, x: t(x))(teacher, jnp.asarray(images)), 32, 2)


def test_vit_teacher_matches_hf_vit_model():
    torch = require("torch")
    transformers = require("transformers")
    config = transformers.ViTConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                    image_size=32, patch_size=8, attn_implementation="eager")
    hf = transformers.ViTModel(config).eval()
    state = _randomise(hf, torch, 1)
    images = _images(32)
    with torch.no_grad():
        hf_out = hf(pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2), output_hidden_states=True,
                    output_attentions=True)

    def build():
        vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=0,
                                norm_eps=config.layer_norm_eps, rngs=nnx.Rngs(0))
        return VitTeacher(vit)

    abstract = nnx.eval_shape(build)
    teacher = merge_into_model(abstract, ma_convert.teacher_arrays(state, abstract, target=""))
    _compare(hf_out, jax.jit(lambda t, x: t(x))(teacher, jnp.asarray(images)), 32, 2)


def test_official_pth_with_args_namespace(tmp_path):
    torch = require("torch")
    config, state, io = load_case("linear")
    path = os.path.join(tmp_path, "checkpoint-199.pth")
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}, "optimizer": {}, "epoch": 199,
                "scaler": {"scale": 1.0}, "args": argparse.Namespace(model="mae_vit_base_patch16", blr=1.5e-4)}, path)
    checkpoint = ma_convert.read_official_checkpoint(path)
    assert "args" not in checkpoint and checkpoint["epoch"] == 199
    model = ma_convert.convert_maskalign(checkpoint, abstract_model(config))
    out = nnx.jit(lambda m, x, ids: m(x, ids_keep=ids))(model, jnp.asarray(io["images_bhwc"]),
                                                        jnp.asarray(io["ids_keep"]))
    assert abs(float(out.loss) - float(io["loss"])) < 1e-4 * float(io["loss"])
    assert os.path.isdir(FIXTURES)


def test_namespace_is_the_only_extra_global(tmp_path):
    torch = require("torch")
    path = os.path.join(tmp_path, "evil.pth")
    torch.save({"model": {"w": torch.zeros(2)}, "args": argparse.Namespace(), "other": fractions.Fraction(1, 3)}, path)
    with pytest.raises((CheckpointReadError, pickle.UnpicklingError), match="Fraction"):
        ma_convert.read_official_checkpoint(path)
