"""The official ILA optimisation setup as zoo optimizer settings (`utils/optimizer.py:build_optimizer`, spec §1.6).

Only three groups are optimised: parameters whose name contains `message_` (message_fc, message_ln and the whole ILA
module), `temporal_` (the two skip FCs) or `mit` (the MIT head; SSv2's classify_head is inside it). Everything else is
frozen: the CLIP image tower (embeddings, ln_pre / ln_post, proj, every block's attn, ln_1, mlp, ln_2), the text
tower and logit_scale (`FIX_TEXT`), and the X-CLIP prompts (`prompts_generator`, `prompts_visual_ln`,
`prompts_visual_proj`), which the released code builds but never passes to the optimiser. BatchNorm running
statistics are `nnx.BatchStat`s, not parameters: they update in the forward pass whatever is frozen.

The patterns are `re.fullmatch`ed against dotted NNX paths, as `zoo.train.optim` does.
"""

from __future__ import annotations

import re
from typing import Any

# Group name -> regex over dotted parameter paths (the official substring tests).
TRAINABLE_PATTERNS: dict[str, str] = {
    "message": r".*message_.*",
    "temporal": r".*temporal_.*",
    "mit": r".*mit.*",
}
# The X-CLIP prompt parameters: frozen officially, trainable with `train_prompts=True` (the official code's
# commented-out `prompts_parameters` group: MIT's lr, TRAIN.WEIGHT_DECAY).
PROMPT_PATTERN = r"prompts_.*"
# Everything outside the three groups (for `optimizer.frozen`).
FROZEN_PATTERNS: tuple[str, ...] = (r"(?!.*(message_|temporal_|mit)).*",)
# The official defaults (`utils/config.py`): TRAIN.LR 8e-6, TRAIN.WEIGHT_DECAY 0.003.
BASE_LR = 8e-6
BASE_WEIGHT_DECAY = 0.003
ADAMW = {"name": "adamw", "b1": 0.9, "b2": 0.98, "eps": 1e-8}
MIT_LR = 4e-4


def frozen_patterns(train_prompts: bool = False) -> tuple[str, ...]:
    """`optimizer.frozen`: everything but the official groups (and the prompts with `train_prompts`)."""
    if not train_prompts:
        return FROZEN_PATTERNS
    return (r"(?!.*(message_|temporal_|mit)|prompts_).*",)


def official_param_groups(base_lr: float = BASE_LR, weight_decay: float = BASE_WEIGHT_DECAY, *,
                          train_prompts: bool = False) -> tuple[dict, ...]:
    """The three official AdamW groups as `optimizer.groups` entries: message_ (lr 5e-4, wd 1e-2), temporal_
    (lr 10 x TRAIN.LR, wd 1e-3) and mit (lr 4e-4, wd TRAIN.WEIGHT_DECAY), plus a prompts group (mit's settings)
    with `train_prompts`. The cosine schedule ends at the absolute `min_lr` TRAIN.LR / 100 for every group. 1-D
    parameters, biases and positional embeddings get no weight decay (the zoo optimizer's default no-decay rule)."""
    min_lr = base_lr / 100
    groups = [
        {"pattern": TRAINABLE_PATTERNS["message"], "lr": 5e-4, "weight_decay": 1e-2, "min_lr": min_lr},
        {"pattern": TRAINABLE_PATTERNS["temporal"], "lr": 10 * base_lr, "weight_decay": 1e-3, "min_lr": min_lr},
        {"pattern": TRAINABLE_PATTERNS["mit"], "lr": MIT_LR, "weight_decay": weight_decay, "min_lr": min_lr},
    ]
    if train_prompts:
        groups.append({"pattern": PROMPT_PATTERN, "lr": MIT_LR, "weight_decay": weight_decay, "min_lr": min_lr})
    return tuple(groups)


def param_group(path: str) -> str:
    """"message", "temporal", "mit" (the first official group whose pattern matches dotted `path`) or "frozen"."""
    for name, pattern in TRAINABLE_PATTERNS.items():
        if re.fullmatch(pattern, path):
            return name
    return "frozen"


def group_param_counts(state: Any) -> dict[str, int]:
    """Parameter counts per official group of an `nnx.State` of `nnx.Param`s (works on `nnx.eval_shape` output)."""
    from flax import nnx

    counts = {"message": 0, "temporal": 0, "mit": 0, "frozen": 0}
    for path, leaf in nnx.to_flat_state(state):
        value = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
        size = 1
        for dim in value.shape:
            size *= dim
        counts[param_group(".".join(str(p) for p in path))] += size
    return counts
