"""Official MaskAlign checkpoints -> NNX: the pre-training model, and the fine-tuning ViT from its student.

The pre-training checkpoint (MAE's `misc.save_model`: `{'model', 'optimizer', 'epoch', 'scaler', 'args'}`) holds in
`model`:
- the student under timm names (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.*`, `norm`) -> `student.*`
  (`pos_embed` is the fixed sin-cos table, loaded into the student's non-trainable buffer);
- `distill_heads.N` (linear) or `distill_heads.N.{0,1,2}` (nn.Sequential heads) -> `distill_heads.N.{fc1,norm,fc}`;
- `distill_weights` (Dynamic Alignment) -> `distill_weights`;
- the teacher: a HF `CLIPVisionModel` under `clip_model.vision_model.*` (transformers 4.x, the original setup) or
  `clip_model.*` (transformers 5.x drops the `vision_model` level), or a HF `ViTModel` under `dino_model.*`.
HF CLIP vision names map onto the zoo's CLIP image tower (`teacher.tower.*`): `embeddings.patch_embedding` ->
`patch_embed.proj` (no bias), `class_embedding`, `position_embedding` -> `positional_embedding` (resampled with torch
bicubic, no antialias, when the grid differs: CLIP-L/14 run at 196), `pre_layrnorm` -> `ln_pre`,
`encoder.layers.N.{self_attn.q/k/v_proj}` -> the fused `transformer.resblocks.N.attn.qkv` ([q; k; v] on the output
axis), `self_attn.out_proj` -> `attn.proj`, `layer_norm1/2` -> `ln_1/2`, `mlp.fc1/fc2`, `post_layernorm` -> `ln_post`;
`position_ids` (a buffer of older transformers) is ignored. HF ViT names (4.x `encoder.layer.N.attention.attention.query`, 5.x
`layers.N.attention.q_proj`) map onto `models.vit` (`teacher.vit.*`).

Every unmapped, missing or mis-shaped key is reported at once (`zoo.convert.ConversionError`).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from models.maskalign.model import MaskAlign
from models.maskalign.teacher import ClipTeacher, VitTeacher
from models.vit.convert import VIT_RULES, resample_abs_pos_embed
from zoo.convert import (
    CheckpointReadError,
    ConversionError,
    Rule,
    conv2d,
    extract_state_dict,
    flat_paths,
    kernel_rules,
    linear,
    map_state_dict,
    merge_into_model,
    norm_rules,
    read_checkpoint,
)

# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------


def read_official_checkpoint(path: str | os.PathLike) -> Any:
    """Read an official MaskAlign / MAE `.pth` (nested dicts of numpy arrays).

    The files also pickle `args` (an `argparse.Namespace`), which `torch.load(weights_only=True)` refuses; it is
    allowed here, and only it (`torch.serialization.safe_globals`), so no arbitrary object is unpickled. Other files
    go through `zoo.convert.read_checkpoint`.
    """
    try:
        return read_checkpoint(path)
    except CheckpointReadError as err:
        if "Namespace" not in str(err):
            raise
        try:
            import torch
        except ImportError:  # the tensor-only reader refused it; without torch there is no safe way around
            raise CheckpointReadError(
                f"{path} pickles an argparse.Namespace ('args'); install torch to read it, or re-save "
                "{'model': checkpoint['model']}"
            ) from err
        from zoo.convert import _to_numpy_tree

        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        checkpoint = dict(checkpoint)
        checkpoint.pop("args", None)
        return _to_numpy_tree(checkpoint)


# --------------------------------------------------------------------------------------------------------------------
# Key maps
# --------------------------------------------------------------------------------------------------------------------


def _prefixed(rules, prefix: str) -> tuple[Rule, ...]:
    return tuple(Rule(r.pattern, prefix + r.target, r.transform) for r in rules)


STUDENT_RULES = _prefixed(VIT_RULES, "student.")

# Official nn.Sequential indices per head type -> DistillHead attribute names.
_HEAD_LAYERS = {
    "linear": {},
    "norm_linear": {"0": "norm", "1": "fc"},
    "mlp": {"0": "fc1", "2": "fc"},
    "mlp2": {"0": "fc1", "1": "norm", "2": "fc"},
}


def head_rules(head_type: str) -> tuple[Rule, ...]:
    """`distill_heads.N[.i].{weight,bias}` -> `distill_heads.N.<fc1|norm|fc>.{kernel|scale,bias}`."""
    if head_type == "linear":
        return tuple(kernel_rules(r"distill_heads\.(\d+)", r"distill_heads.\1.fc"))
    rules = []
    for index, name in _HEAD_LAYERS[head_type].items():
        layer_rules = norm_rules if name == "norm" else kernel_rules
        rules += layer_rules(rf"distill_heads\.(\d+)\.{index}", rf"distill_heads.\1.{name}")
    return tuple(rules)


_HF_CLIP_LINEARS = {"self_attn.qkv_proj": "attn.qkv", "self_attn.out_proj": "attn.proj", "mlp.fc1": "mlp.fc1",
                    "mlp.fc2": "mlp.fc2"}
_HF_CLIP_NORMS = {"layer_norm1": "ln_1", "layer_norm2": "ln_2"}


def _hf_layer_rules(layer: str, dest: str, linears: Mapping[str, str], norms: Mapping[str, str]) -> list[Rule]:
    """Rules of the HF encoder layers matched by the regex `layer` -> `dest`: their linears and norms (HF name ->
    ours, relative to the layer)."""
    rules = []
    for hf, ours in linears.items():
        rules += kernel_rules(rf"{layer}\.{re.escape(hf)}", f"{dest}.{ours}")
    for hf, ours in norms.items():
        rules += norm_rules(rf"{layer}\.{re.escape(hf)}", f"{dest}.{ours}")
    return rules


def hf_clip_vision_rules(target: str) -> tuple[Rule, ...]:
    """Rules of HF `CLIPVisionModel` names without prefix (`embeddings.*`, `pre_layrnorm`, `encoder.layers.N.*`,
    `post_layernorm`; q/k/v already fused into `self_attn.qkv_proj` by `fuse_hf_qkv`) -> a VisionTower at `target`."""
    layer, dest = r"encoder\.layers\.(\d+)", target + r"transformer.resblocks.\1"
    rules = [
        Rule(r"embeddings\.patch_embedding\.weight", target + "patch_embed.proj.kernel", conv2d),
        Rule(r"embeddings\.class_embedding", target + "class_embedding"),
        Rule(r"embeddings\.position_embedding\.weight", target + "positional_embedding"),
        *norm_rules(r"pre_layrnorm", target + "ln_pre"),
        *norm_rules(r"post_layernorm", target + "ln_post"),
    ]
    return tuple(rules + _hf_layer_rules(layer, dest, _HF_CLIP_LINEARS, _HF_CLIP_NORMS))


# transformers 4.x (`encoder.layer.N.attention.attention.query`, ...) and 5.x (`layers.N.attention.q_proj`, ...).
_HF_VIT_LAYOUTS = (
    (r"encoder\.layer\.(\d+)", {"attention.attention.qkv": "attn.qkv", "attention.output.dense": "attn.proj",
                                "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"}),
    (r"layers\.(\d+)", {"attention.qkv_proj": "attn.qkv", "attention.o_proj": "attn.proj", "mlp.fc1": "mlp.fc1",
                        "mlp.fc2": "mlp.fc2"}),
)
_HF_VIT_NORMS = {"layernorm_before": "norm1", "layernorm_after": "norm2"}


def hf_vit_rules(target: str) -> tuple[Rule, ...]:
    """Rules of HF `ViTModel` names (DINO; transformers 4.x or 5.x layout, q/k/v fused by `fuse_hf_qkv`) -> a
    timm-layout `VisionTransformer` at `target`; the pooler is not part of it (ignored by the caller)."""
    dest = target + r"blocks.\1"
    rules = [
        *kernel_rules(r"embeddings\.patch_embeddings\.projection", target + "patch_embed.proj", conv2d),
        Rule(r"embeddings\.cls_token", target + "cls_token"),
        Rule(r"embeddings\.position_embeddings", target + "pos_embed"),
        *norm_rules(r"layernorm", target + "norm"),
    ]
    for layer, linears in _HF_VIT_LAYOUTS:
        rules += _hf_layer_rules(layer, dest, linears, _HF_VIT_NORMS)
    return tuple(rules)


_QKV_NAMES = (
    # (separate q/k/v key pattern with {} for the projection name, projection names, fused name)
    ("{base}self_attn.{name}_proj.{kind}", ("q", "k", "v"), "{base}self_attn.qkv_proj.{kind}"),
    ("{base}attention.attention.{name}.{kind}", ("query", "key", "value"), "{base}attention.attention.qkv.{kind}"),
    ("{base}attention.{name}_proj.{kind}", ("q", "k", "v"), "{base}attention.qkv_proj.{kind}"),
)


def fuse_hf_qkv(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate HF's separate q/k/v (CLIP `self_attn.{q,k,v}_proj`, ViT `attention.attention.{query,key,value}`)
    into one fused key along the output axis ([q; k; v], the layout of `models.layers.Attention.qkv`).

    A layer with only some of the three keeps them as they are, so the conversion reports them (unmapped) and the
    fused parameter (missing).
    """
    out = dict(state_dict)
    for pattern, names, fused in _QKV_NAMES:
        first = pattern.split("{base}")[1].format(name=names[0], kind="")
        for key in list(out):
            for kind in ("weight", "bias"):
                suffix = first + kind
                if not key.endswith(suffix):
                    continue
                base = key[: -len(suffix)]
                parts = [pattern.format(base=base, name=n, kind=kind) for n in names]
                if all(p in out for p in parts):
                    out[fused.format(base=base, kind=kind)] = np.concatenate([out.pop(p) for p in parts], axis=0)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Teacher keys
# --------------------------------------------------------------------------------------------------------------------

_TEACHER_IGNORED = (r"embeddings\.position_ids", r"pooler\..*")


def _strip(state_dict: Mapping[str, np.ndarray], prefixes: tuple[str, ...]) -> tuple[dict, dict]:
    """(keys under one of `prefixes`, with it removed; the other keys)."""
    inside, rest = {}, {}
    for key, value in state_dict.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                inside[key[len(prefix):]] = value
                break
        else:
            rest[key] = value
    return inside, rest


def _resample_position_embedding(teacher_sd: dict, key: str, expected: tuple[int, ...], grid: tuple[int, int],
                                 *, squeeze_batch: bool) -> None:
    """Resample a teacher position embedding in place (torch bicubic, no antialias: HF / the official
    `resize_pos_embed`) when the checkpoint's square grid differs from the model's."""
    have = teacher_sd.get(key)
    if have is None or tuple(have.shape) == expected or have.shape[-1] != expected[-1]:
        return
    old = have.shape[-2] - 1
    if math.isqrt(old) ** 2 != old:
        return  # left to the mis-shape report
    teacher_sd[key] = resample_abs_pos_embed(have, grid, num_prefix_tokens=1, antialias=False)
    if squeeze_batch:
        teacher_sd[key] = teacher_sd[key].reshape(expected)


def teacher_arrays(teacher_sd: Mapping[str, np.ndarray], abstract_teacher: nnx.Module, *, target: str = "teacher.",
                   source: str = "teacher") -> dict[str, np.ndarray]:
    """Map a teacher's HF state dict (no prefix) onto `abstract_teacher` (ClipTeacher / VitTeacher): {target + path:
    array}.

    Unmapped / missing / mis-shaped keys raise one ConversionError. The CLIP tower's `proj` (absent from HF's
    `CLIPVisionModel`) may be missing; it is loaded from a `CLIPModel`'s `visual_projection` when the tower has one
    (`output_dim` > 0).
    """
    sd = fuse_hf_qkv(teacher_sd)
    state = nnx.state(abstract_teacher, nnx.Not(nnx.RngState))
    expected = flat_paths(state)
    allow_missing: list[str] = []
    if isinstance(abstract_teacher, ClipTeacher):
        rules = list(hf_clip_vision_rules("tower."))
        _resample_position_embedding(sd, "embeddings.position_embedding.weight",
                                     tuple(expected["tower.positional_embedding"].shape),
                                     abstract_teacher.grid_size, squeeze_batch=False)
        if "visual_projection.weight" in sd and expected["tower.proj"].shape[1] > 0:
            rules.append(Rule(r"visual_projection\.weight", "tower.proj", linear))
        else:
            sd.pop("visual_projection.weight", None)
            allow_missing.append(r"tower\.proj")
    elif isinstance(abstract_teacher, VitTeacher):
        rules = list(hf_vit_rules("vit."))
        _resample_position_embedding(sd, "embeddings.position_embeddings", tuple(expected["vit.pos_embed"].shape),
                                     abstract_teacher.grid_size, squeeze_batch=True)
    else:
        raise TypeError(f"no key map for a teacher of type {type(abstract_teacher).__name__}")
    arrays = map_state_dict(sd, rules, state, ignore=_TEACHER_IGNORED, allow_missing=allow_missing, source=source)
    return {target + path: value for path, value in arrays.items()}


_CLIP_TEXT_SIDE = ("text_model.", "text_projection", "logit_scale")


def convert_hf_clip_vision(checkpoint: Any, abstract_teacher: ClipTeacher) -> ClipTeacher:
    """A Hugging Face CLIP checkpoint (`CLIPModel`: `vision_model.*` next to `text_model.*`, or `CLIPVisionModel`,
    any transformers version, e.g. `openai/clip-vit-base-patch16`'s `model.safetensors`) -> a `ClipTeacher`; the
    text side is ignored."""
    state_dict = extract_state_dict(checkpoint)
    vision, rest = _strip(state_dict, ("vision_model.",))
    vision.update({k: v for k, v in rest.items() if not k.startswith(_CLIP_TEXT_SIDE)})
    arrays = teacher_arrays(vision, abstract_teacher, target="", source="HF CLIP checkpoint")
    return merge_into_model(abstract_teacher, arrays)


# --------------------------------------------------------------------------------------------------------------------
# The pre-training model
# --------------------------------------------------------------------------------------------------------------------


def convert_maskalign(checkpoint: Any, abstract_model: MaskAlign) -> MaskAlign:
    """Official pre-training checkpoint (or its `model` state dict) -> `MaskAlign` (see the module docstring)."""
    state_dict = extract_state_dict(checkpoint, prefix="module.")
    teacher_sd, rest = _strip(state_dict, ("clip_model.vision_model.", "clip_model.", "dino_model."))
    problems = []
    arrays: dict[str, np.ndarray] = {}
    own = nnx.state(abstract_model, nnx.All(nnx.Not(nnx.RngState), lambda path, _: path[0] != "teacher"))
    rules = (*STUDENT_RULES, *head_rules(abstract_model.head_type), Rule(r"distill_weights", "distill_weights"))
    try:
        arrays.update(map_state_dict(rest, rules, own, source="student / heads / distill_weights"))
    except ConversionError as err:
        problems.append(str(err))
    try:
        arrays.update(teacher_arrays(teacher_sd, abstract_model.teacher, source="teacher (clip_model.* / dino_model.*)"))
    except ConversionError as err:
        problems.append(str(err))
    if problems:
        raise ConversionError("the MaskAlign checkpoint does not match the model:\n" + "\n".join(problems))
    return merge_into_model(abstract_model, arrays)


# --------------------------------------------------------------------------------------------------------------------
# Fine-tuning: a timm ViT from the student
# --------------------------------------------------------------------------------------------------------------------

_NOT_STUDENT = (r"distill_heads\..*", r"distill_weights", r"clip_model\..*", r"dino_model\..*")


def convert_maskalign_to_vit(checkpoint: Any, abstract_vit: nnx.Module, *, head_seed: int = 0) -> nnx.Module:
    """The student of a MaskAlign checkpoint -> a `models.vit.VisionTransformer` to fine-tune.

    As the official `main_finetune.py` (`load_state_dict(strict=False)`, asserting that only `head` / `fc_norm` are
    missing): heads, DA weights and teacher are dropped; the pre-training `norm` is dropped when the ViT pools with
    `fc_norm` (global_pool="avg", the official default); `pos_embed` (the sin-cos table) is resampled with torch
    bicubic (no antialias, the official `interpolate_pos_embed`) for another grid. The new `fc_norm` starts at
    ones / zeros and the new head at trunc_normal(std=2e-5) (key `head_seed`) with a zero bias, as the official.
    """
    state_dict = dict(extract_state_dict(checkpoint, prefix="module."))
    expected = flat_paths(nnx.state(abstract_vit, nnx.Param))
    if "norm.scale" not in expected:
        state_dict.pop("norm.weight", None)
        state_dict.pop("norm.bias", None)
    if "pos_embed" in state_dict and "pos_embed" in expected:
        have, want = state_dict["pos_embed"], tuple(expected["pos_embed"].shape)
        if have.shape != want and have.shape[-1] == want[-1]:
            state_dict["pos_embed"] = resample_abs_pos_embed(
                have, abstract_vit.grid_size, num_prefix_tokens=abstract_vit.num_prefix_tokens, antialias=False
            )
    arrays = map_state_dict(
        state_dict, VIT_RULES, nnx.state(abstract_vit, nnx.Not(nnx.RngState)), ignore=_NOT_STUDENT,
        allow_missing=(r"head\..*", r"fc_norm\..*"), source="MaskAlign student",
    )
    if "fc_norm.scale" in expected and "fc_norm.scale" not in arrays:
        arrays["fc_norm.scale"] = np.ones(expected["fc_norm.scale"].shape, expected["fc_norm.scale"].dtype)
    if "head.kernel" in expected and "head.kernel" not in arrays:
        kernel = expected["head.kernel"]
        init = nnx.initializers.truncated_normal(stddev=2e-5)
        arrays["head.kernel"] = np.asarray(init(jax.random.key(head_seed), kernel.shape, kernel.dtype))
    return merge_into_model(abstract_vit, arrays)


# --------------------------------------------------------------------------------------------------------------------
# Export: the trained part in the official key layout (what a fine-tune reads)
# --------------------------------------------------------------------------------------------------------------------


def _to_torch_layout(path: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """One NNX entry -> (torch name, torch layout): `kernel` -> `weight` (Linear transposed, Conv HWIO -> OIHW),
    `scale` -> `weight`, the rest unchanged (the inverse of the ViT / head rules)."""
    head, _, leaf = path.rpartition(".")
    if leaf == "kernel":
        value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        return f"{head}.weight", value
    if leaf == "scale":
        return f"{head}.weight", value
    return path, value


def export_official_state_dict(model: MaskAlign) -> dict[str, np.ndarray]:
    """The trained part of `model` (student, `distill_heads`, `distill_weights`; not the frozen teacher) as an
    official pre-training `model` state dict: timm student names, `distill_heads.N[.i]`, `distill_weights`.

    `convert_maskalign_to_vit` (the fine-tuning ViTs' `pretrained=`) reads it as it reads an official `.pth`; written
    with `np.savez` it is the `.npz` a MaskAlign run leaves in its workdir (`models.maskalign.tasks`).
    """
    flat = flat_paths(nnx.state(model, nnx.Not(nnx.RngState)))
    index_of = {name: index for index, name in _HEAD_LAYERS[model.head_type].items()}
    out: dict[str, np.ndarray] = {}
    for path, value in flat.items():
        value = np.asarray(jax.device_get(value))
        if path.startswith("student."):
            key, array = _to_torch_layout(path.removeprefix("student."), value)
        elif path.startswith("distill_heads."):
            _, number, layer, leaf = path.split(".")
            inner = "" if model.head_type == "linear" else f"{index_of[layer]}."
            key, array = _to_torch_layout(f"distill_heads.{number}.{inner}{leaf}", value)
        elif path == "distill_weights":
            key, array = path, value
        else:
            continue  # the teacher: reloaded from its own checkpoint
        out[key] = np.ascontiguousarray(array)
    return out
