"""The shared library of the zoo: registry, weight conversion, checkpoints, data loader and trainer.

    import zoo
    zoo.list_models("vit_*")
    model = zoo.create_model("vit_base_patch16_224", pretrained="vit_base.safetensors")
"""

from zoo.registry import (
    ModelEntry,
    PretrainedCfg,
    create_model,
    get_model_entry,
    list_models,
    pretrained_cfg,
    register_model,
)

__all__ = [
    "ModelEntry",
    "PretrainedCfg",
    "create_model",
    "get_model_entry",
    "list_models",
    "pretrained_cfg",
    "register_model",
]
