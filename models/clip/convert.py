"""OpenAI / open_clip CLIP state dicts -> NNX.

Reads the plain state-dict layout (`visual.conv1.weight`, `visual.transformer.resblocks.N.attn.in_proj_weight`,
`transformer.resblocks.N...`, `token_embedding.weight`, `text_projection`, `logit_scale`, ...) as saved by open_clip
(`open_clip_pytorch_model.bin` / `open_clip_model.safetensors` on the hub) or by `torch.jit.load(openai.pt)
.state_dict()`. The OpenAI `.pt` files themselves are TorchScript archives: re-save their state dict first (see
README). OpenAI's fp16 tensors are cast to the model's parameter dtype.
"""

from __future__ import annotations

import math

from flax import nnx

from models.vit.convert import resample_abs_pos_embed
from zoo.convert import Rule, conv2d, convert_with_rules, extract_state_dict, flat_paths, linear

CLIP_RULES = (
    Rule(r"visual\.conv1\.weight", "visual.conv1.kernel", conv2d),
    Rule(r"visual\.(class_embedding|positional_embedding|proj)", r"visual.\1"),
    Rule(r"visual\.(ln_pre|ln_post)\.weight", r"visual.\1.scale"),
    Rule(r"visual\.(ln_pre|ln_post)\.bias", r"visual.\1.bias"),
    Rule(r"visual\.transformer\.resblocks\.(\d+)\.(ln_1|ln_2)\.weight", r"visual.transformer.resblocks.\1.\2.scale"),
    Rule(r"visual\.transformer\.resblocks\.(\d+)\.(ln_1|ln_2)\.bias", r"visual.transformer.resblocks.\1.\2.bias"),
    Rule(r"visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_weight",
         r"visual.transformer.resblocks.\1.attn.in_proj.kernel", linear),
    Rule(r"visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_bias", r"visual.transformer.resblocks.\1.attn.in_proj.bias"),
    Rule(r"visual\.transformer\.resblocks\.(\d+)\.(attn\.out_proj|mlp\.c_fc|mlp\.c_proj)\.weight",
         r"visual.transformer.resblocks.\1.\2.kernel", linear),
    Rule(r"visual\.transformer\.resblocks\.(\d+)\.(attn\.out_proj|mlp\.c_fc|mlp\.c_proj)\.bias",
         r"visual.transformer.resblocks.\1.\2.bias"),
    Rule(r"transformer\.resblocks\.(\d+)\.(ln_1|ln_2)\.weight", r"text.transformer.resblocks.\1.\2.scale"),
    Rule(r"transformer\.resblocks\.(\d+)\.(ln_1|ln_2)\.bias", r"text.transformer.resblocks.\1.\2.bias"),
    Rule(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_weight", r"text.transformer.resblocks.\1.attn.in_proj.kernel",
         linear),
    Rule(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_bias", r"text.transformer.resblocks.\1.attn.in_proj.bias"),
    Rule(r"transformer\.resblocks\.(\d+)\.(attn\.out_proj|mlp\.c_fc|mlp\.c_proj)\.weight",
         r"text.transformer.resblocks.\1.\2.kernel", linear),
    Rule(r"transformer\.resblocks\.(\d+)\.(attn\.out_proj|mlp\.c_fc|mlp\.c_proj)\.bias",
         r"text.transformer.resblocks.\1.\2.bias"),
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
