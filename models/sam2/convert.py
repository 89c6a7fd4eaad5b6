"""Official SAM2 checkpoints (`{"model": state_dict}` `.pt`) -> `models.sam2.model.SAM2`.

A declarative key map (first matching rule wins). NNX paths follow the torch names, except where the shared
`models.layers` blocks name things their own way (`_RENAMES`: attention `out_proj` -> `proj`, two-layer MLPs ->
`mlp.fc1` / `mlp.fc2`); LayerNorm `weight` becomes `scale`, Linear/Conv `weight` becomes `kernel`, nn.Embedding
weights become the bare parameter. The Hiera position
embeddings are stored NHWC; their bicubic resize to the feature grid is a fixed torch-exact matrix (A=-0.75,
align_corners=False) applied in the forward pass, so the checkpoint's (1, C, bkg, bkg) parameter is kept as is and
any `image_size` works. SAM 2.0 and 2.1 checkpoints are told apart by the 2.1-only keys.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from zoo.convert import (
    ConversionError,
    Rule,
    conv2d,
    conv_transpose2d,
    convert_with_rules,
    extract_state_dict,
    identity,
    linear,
)

V21_ONLY_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias")

_LAYER_NORMS = (
    r"(.*\.(?:norm\d?|norm_final_attn|mask_downscaling\.[14]|output_upscaling\.1|"
    r"mask_downsampler\.encoder\.(?:1|4|7|10)))\.weight"
)
_CONVS = (
    r"(image_encoder\.trunk\.patch_embed\.proj|image_encoder\.neck\.convs\.\d+\.conv|sam_mask_decoder\.conv_s[01]|"
    r"sam_prompt_encoder\.mask_downscaling\.[036]|memory_encoder\.mask_downsampler\.encoder\.\d+|"
    r"memory_encoder\.pix_feat_proj|memory_encoder\.out_proj|memory_encoder\.fuser\.layers\.\d+\.dwconv|"
    r"mask_downsample)\.weight"
)


# Where the shared `models.layers` blocks name a parameter otherwise than the checkpoint: (torch module regex, NNX
# path). Attentions' `out_proj` -> `proj` (the memory encoder's conv `out_proj` keeps its name); the two-layer MLPs
# (Hiera and two-way blocks' `mlp.layers.{0,1}`, memory attention's `linear1/2`, the fuser's `pwconv1/2`) ->
# `mlp.fc1` / `mlp.fc2`.
_RENAMES = (
    (r"(.*attn\w*)\.out_proj", r"\1.proj"),
    (r"(.*\.mlp)\.layers\.0", r"\1.fc1"),
    (r"(.*\.mlp)\.layers\.1", r"\1.fc2"),
    (r"(memory_attention\.layers\.\d+)\.linear1", r"\1.mlp.fc1"),
    (r"(memory_attention\.layers\.\d+)\.linear2", r"\1.mlp.fc2"),
    (r"(memory_encoder\.fuser\.layers\.\d+)\.pwconv1", r"\1.mlp.fc1"),
    (r"(memory_encoder\.fuser\.layers\.\d+)\.pwconv2", r"\1.mlp.fc2"),
)


def _nchw_to_nhwc(x):
    return x.transpose(0, 2, 3, 1)


RULES: list[Rule] = [
    Rule(r"image_encoder\.trunk\.(pos_embed|pos_embed_window)", r"image_encoder.trunk.\1", _nchw_to_nhwc),
    Rule(_LAYER_NORMS, r"\1.scale"),
    Rule(_CONVS, r"\1.kernel", conv2d),
    Rule(r"sam_mask_decoder\.output_upscaling\.([03])\.weight", r"sam_mask_decoder.output_upscaling.\1.kernel",
         conv_transpose2d),
    Rule(r"sam_prompt_encoder\.(point_embeddings\.\d|not_a_point_embed|no_mask_embed)\.weight",
         r"sam_prompt_encoder.\1"),
    Rule(r"sam_mask_decoder\.(iou_token|mask_tokens|obj_score_token)\.weight", r"sam_mask_decoder.\1"),
    Rule(r"(maskmem_tpos_enc|no_mem_embed|no_mem_pos_enc|no_obj_ptr|no_obj_embed_spatial|"
         r"sam_prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix|memory_encoder\.fuser\.layers\.\d+\.gamma)",
         r"\1", identity),
    *(Rule(pattern + r"\.weight", target + ".kernel", linear) for pattern, target in _RENAMES),
    *(Rule(pattern + r"\.bias", target + ".bias") for pattern, target in _RENAMES),
    Rule(r"(.*)\.weight", r"\1.kernel", linear),  # every remaining weight is an nn.Linear
    Rule(r"(.*)\.bias", r"\1.bias"),
]


def _check_variant(state_dict: dict[str, Any], config) -> None:
    """Name the problem when the checkpoint is another version or trunk than the model (before the long key diff)."""
    has_v21 = [k for k in V21_ONLY_KEYS if k in state_dict]
    if has_v21 and config.version == "2.0":
        raise ConversionError(
            f"this is a SAM 2.1 checkpoint (it has the 2.1-only keys {has_v21}), but {config.name} is a SAM 2.0 "
            f"model; load it with {config.name.replace('sam2_', 'sam2.1_')}"
        )
    if not has_v21 and config.version == "2.1" and "maskmem_tpos_enc" in state_dict:
        raise ConversionError(
            f"this is a SAM 2.0 checkpoint (it lacks the 2.1-only keys {list(V21_ONLY_KEYS)}), but {config.name} is "
            f"a SAM 2.1 model; load it with {config.name.replace('sam2.1_', 'sam2_')}"
        )
    patch = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is not None:
        blocks = {int(k.split(".")[3]) for k in state_dict if k.startswith("image_encoder.trunk.blocks.")}
        want_dim, want_blocks = config.trunk.embed_dim, sum(config.trunk.stages)
        if patch.shape[0] != want_dim or len(blocks) != want_blocks:
            from models.sam2.model import TRUNKS

            guess = [v for v, t in TRUNKS.items() if t.embed_dim == patch.shape[0] and sum(t.stages) == len(blocks)]
            hint = f" (it looks like hiera_{guess[0]})" if guess else ""
            raise ConversionError(
                f"the checkpoint's Hiera trunk has width {patch.shape[0]} and {len(blocks)} blocks{hint}, but "
                f"{config.name} has width {want_dim} and {want_blocks} blocks"
            )


def convert_sam2(checkpoint: Any, abstract_model: nnx.Module) -> nnx.Module:
    """Map an official SAM2 checkpoint (or its state dict) onto an abstract `SAM2` from `nnx.eval_shape`."""
    state_dict = extract_state_dict(checkpoint)
    _check_variant(state_dict, abstract_model.config)
    return convert_with_rules(state_dict, abstract_model, RULES, source=f"SAM2 checkpoint for {abstract_model.config.name}")
