"""OpenAI / open_clip CLIP state dicts -> NNX.

Reads the plain state-dict layout (`visual.conv1.weight`, `visual.transformer.resblocks.N.attn.in_proj_weight`,
`transformer.resblocks.N...`, `token_embedding.weight`, `text_projection`, `logit_scale`, ...) as saved by open_clip
(`open_clip_pytorch_model.bin` / `open_clip_model.safetensors` on the hub) or by `torch.jit.load(openai.pt)
.state_dict()`. The OpenAI `.pt` files themselves are TorchScript archives: re-save their state dict first (see
README). OpenAI's fp16 tensors are cast to the model's parameter dtype. The keys keep torch's names; the rules map
the four that the model names after `models.layers`: `visual.conv1` -> `visual.patch_embed.proj`, `attn.in_proj_*` ->
`attn.qkv`, `attn.out_proj` -> `attn.proj`, `mlp.c_fc` / `mlp.c_proj` -> `mlp.fc1` / `mlp.fc2`.
"""

from __future__ import annotations

import math

from flax import nnx

from models.vit.convert import resample_abs_pos_embed
from zoo.convert import Rule, conv2d, convert_with_rules, extract_state_dict, flat_paths, linear

# torch Linear names in a residual block (regex) -> the `models.layers` names; the norms keep torch's names.
_LINEARS = {r"attn\.out_proj": "attn.proj", r"mlp\.c_fc": "mlp.fc1", r"mlp\.c_proj": "mlp.fc2"}


def block_rules(source: str, target: str) -> tuple[Rule, ...]:
    """Rules of the torch keys `source.resblocks.N.*` (`source` a regex) -> the NNX paths `target.resblocks.N.*`."""
    block, dest = source + r"\.resblocks\.(\d+)", target + r".resblocks.\1"
    rules = [
        Rule(block + r"\.(ln_1|ln_2)\.weight", dest + r".\2.scale"),
        Rule(block + r"\.(ln_1|ln_2)\.bias", dest + r".\2.bias"),
        # nn.MultiheadAttention's fused in_proj is [q; k; v] on the output axis, the layout `Attention.qkv` splits.
        Rule(block + r"\.attn\.in_proj_weight", dest + ".attn.qkv.kernel", linear),
        Rule(block + r"\.attn\.in_proj_bias", dest + ".attn.qkv.bias"),
    ]
    for torch_name, ours in _LINEARS.items():
        rules.append(Rule(rf"{block}\.{torch_name}\.weight", f"{dest}.{ours}.kernel", linear))
        rules.append(Rule(rf"{block}\.{torch_name}\.bias", f"{dest}.{ours}.bias"))
    return tuple(rules)


CLIP_RULES = (
    Rule(r"visual\.conv1\.weight", "visual.patch_embed.proj.kernel", conv2d),
    Rule(r"visual\.(class_embedding|positional_embedding|proj)", r"visual.\1"),
    Rule(r"visual\.(ln_pre|ln_post)\.weight", r"visual.\1.scale"),
    Rule(r"visual\.(ln_pre|ln_post)\.bias", r"visual.\1.bias"),
    *block_rules(r"visual\.transformer", "visual.transformer"),
    *block_rules(r"transformer", "text.transformer"),
    Rule(r"token_embedding\.weight", "text.token_embedding.embedding"),
    Rule(r"(positional_embedding|text_projection)", r"text.\1"),
    Rule(r"ln_final\.weight", "text.ln_final.scale"),
    Rule(r"ln_final\.bias", "text.ln_final.bias"),
    Rule(r"logit_scale", "logit_scale"),
)

# Non-parameter entries of OpenAI / older open_clip state dicts.
IGNORED = (r"input_resolution", r"context_length", r"vocab_size", r"attn_mask", r"visual\.attn_mask")


def convert_clip(checkpoint, abstract_model: nnx.Module) -> nnx.Module:
    """open_clip / OpenAI CLIP state dict -> `models.clip.CLIP`.

    The image tower's positional embedding is resampled (torch bicubic, antialias=False, as open_clip's
    `resize_pos_embed` and HF's `interpolate_pos_encoding`) when the model's `img_size` gives another grid, e.g. a
    CLIP-L/14 teacher run at 196 px. Every other mismatch raises one `ConversionError` listing all problems.
    """
    state_dict = dict(extract_state_dict(checkpoint, prefix="module."))
    expected = flat_paths(nnx.state(abstract_model, nnx.Param))
    key = "visual.positional_embedding"
    if key in state_dict and key in expected:
        have, want = state_dict[key], tuple(expected[key].shape)
        old = have.shape[0] - 1
        if have.ndim == 2 and have.shape != want and have.shape[1] == want[1] and math.isqrt(old) ** 2 == old:
            state_dict[key] = resample_abs_pos_embed(
                have, abstract_model.visual.grid_size, num_prefix_tokens=1, antialias=False
            )
    return convert_with_rules(state_dict, abstract_model, CLIP_RULES, ignore=IGNORED)
