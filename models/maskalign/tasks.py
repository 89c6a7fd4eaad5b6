"""MaskAlign pre-training through the shared trainer (task "maskalign").

The model is a registered `maskalign_*` variant (`config.model.name` + `overrides`): student, Dynamic Alignment,
heads and the teacher in one module. The teacher is frozen (`optimizer.frozen = ("teacher\\..*",)`: no gradient, no
update, no optimizer state) and, with `checkpoint_frozen = False`, left out of every checkpoint: it is reloaded from
its own checkpoint, `config.model.teacher`, when a run starts or resumes, and when `zoo.create_model(name,
pretrained=<workdir>)` reloads the run. The teacher forward and the attention-guided masking run inside the jitted
step; the mask is drawn from the model's own "mask" stream, so every step draws a new one.

Config: model.{name, overrides, pretrained (a whole MaskAlign checkpoint: official `.pth` or orbax directory), teacher
(the teacher's weights: an orbax directory or checkpoint file of `overrides.teacher_name` for a ViT teacher, a
Hugging Face CLIP checkpoint for a CLIP teacher)}; data.{train, eval, image_size, interpolation, crop_pct, mean, std,
scale, ratio, hflip, eval_batch_size}. Labels in the data are ignored.

Every checkpoint also writes `<workdir>/maskalign_pretrain.npz`: the trained part (student, heads, DA weights) in the
official key layout, which the fine-tuning ViTs load like an official `.pth`
(`create_model("maskalign_vit_base_patch16_ft", pretrained=".../maskalign_pretrain.npz")`).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from models.maskalign.convert import export_official_state_dict
from models.maskalign.model import MaskAlign
from zoo.tasks import register_task
from zoo.tasks.base import Task
from zoo.tasks.classification import image_transform_from_config

EXPORT_NAME = "maskalign_pretrain.npz"


def load_teacher(model: MaskAlign, path: str, *, teacher_name: str | None = None,
                 teacher_overrides: dict[str, Any] | None = None) -> MaskAlign:
    """Load the teacher of `model` in place from `path` and return `model`.

    A ViT teacher (`VitTeacher`): `path` is whatever `zoo.create_model(teacher_name, pretrained=path)` reads (an orbax
    directory written by train.py, e.g. a classifier of the zoo, whose head is dropped; or a timm checkpoint file,
    built with `teacher_overrides`). A CLIP teacher (`ClipTeacher`): a Hugging Face CLIP checkpoint file
    (`convert_hf_clip_vision`). A parameter the teacher has and the source lacks (or mis-shaped) is an error.
    """
    import zoo
    from models.maskalign.convert import convert_hf_clip_vision
    from models.maskalign.teacher import ClipTeacher, VitTeacher
    from zoo.convert import read_checkpoint

    teacher = model.teacher
    if isinstance(teacher, VitTeacher):
        if not teacher_name:
            raise ValueError("loading a ViT teacher needs teacher_name (the registered vit_* its checkpoint is of)")
        overrides = {} if os.path.isdir(path) else dict(teacher_overrides or {})
        source = zoo.create_model(teacher_name, pretrained=path, **overrides)
        _copy_params(source, teacher.vit, what=f"teacher {teacher_name} from {path}")
    elif isinstance(teacher, ClipTeacher):
        if os.path.isdir(path):
            raise ValueError(f"a CLIP teacher loads from a Hugging Face CLIP checkpoint file, not a directory: {path}")
        loaded = convert_hf_clip_vision(read_checkpoint(path), nnx.eval_shape(lambda: teacher))
        _copy_params(loaded, teacher, what=f"CLIP teacher from {path}")
    else:
        raise TypeError(f"no loader for a teacher of type {type(teacher).__name__}")
    return model


def _copy_params(source: nnx.Module, target: nnx.Module, *, what: str) -> None:
    """Copy every parameter / buffer of `target` from the same path of `source` (extra source entries, e.g. a
    classifier head, are ignored)."""
    from zoo.convert import flat_paths

    have = flat_paths(nnx.state(source, nnx.Not(nnx.RngState)))
    want = nnx.state(target, nnx.Not(nnx.RngState))
    missing, bad = [], []
    flat = []
    for path, leaf in nnx.to_flat_state(want):
        key = ".".join(str(p) for p in path)
        if key not in have:
            missing.append(key)
        elif tuple(have[key].shape) != tuple(leaf.get_value().shape):
            bad.append(f"{key}: {tuple(have[key].shape)} vs {tuple(leaf.get_value().shape)}")
        else:
            flat.append((path, leaf.replace(jnp.asarray(have[key], leaf.get_value().dtype))))
    if missing or bad:
        raise ValueError(f"{what} does not fit the teacher: missing {missing[:8]}{' ...' if len(missing) > 8 else ''}"
                         f"; mis-shaped {bad[:8]}")
    nnx.update(target, nnx.from_flat_state(flat))


@register_task("maskalign")
class MaskAlignTask(Task):
    """MaskAlign pre-training: the loss of `MaskAlign.__call__`, per-layer terms logged; eval = the same loss on
    held-out images with a fixed mask stream."""

    config_keys: ClassVar[dict[str, Any]] = {
        "model": {"teacher": None},
        "data": dict.fromkeys(("image_size", "interpolation", "crop_pct", "mean", "std", "scale", "ratio", "hflip")),
    }

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.data_config = config.data

    # ---- model ---------------------------------------------------------------------------------------------------
    def pretrained_source(self) -> str | None:
        model = self.config.model
        return model.get("pretrained", "") or model.get("teacher", "") or None

    def build_pretrained(self, pretrained: str, rngs: nnx.Rngs) -> nnx.Module:
        """The model with a whole MaskAlign checkpoint (`model.pretrained`) and/or the teacher from
        `model.teacher` (which wins for the teacher)."""
        import zoo

        model_cfg = self.config.model
        name, overrides = self.model_name(), self.model_overrides()
        whole = model_cfg.get("pretrained", "")
        if whole:
            model = zoo.create_model(name, pretrained=whole, rngs=rngs, **overrides)
        else:
            model = zoo.create_model(name, rngs=rngs, **overrides)
        teacher = model_cfg.get("teacher", "")
        if teacher:
            load_teacher(model, teacher, teacher_name=overrides.get("teacher_name", "vit_base_patch16_224"),
                         teacher_overrides=overrides.get("teacher_overrides"))
        return model

    # ---- data ----------------------------------------------------------------------------------------------------
    def _transform(self, train: bool):
        # The official pre-training crop: RandomResizedCrop(scale (0.2, 1)) + flip, no other augmentation.
        return image_transform_from_config(self.data_config, train=train, default_scale=(0.2, 1.0))

    def train_iterator(self, *, seed: int, process_index: int, process_count: int):
        pipeline = self.train_pipeline(self._transform(train=True), seed=seed, process_index=process_index,
                                       process_count=process_count)
        return iter(pipeline)

    def eval_batches(self, *, process_index: int, process_count: int):
        return self.eval_batches_of(self._transform(train=False), ("image",), valid_key="mask",
                                    process_index=process_index, process_count=process_count)

    # ---- computation ---------------------------------------------------------------------------------------------
    @staticmethod
    def _layer_metrics(layer_losses: jax.Array) -> dict[str, jax.Array]:
        return {f"layer_{i}": layer_losses[i] for i in range(layer_losses.shape[0])}

    def loss(self, model, batch):
        out = model(batch["image"], train=True)
        return out.loss, self._layer_metrics(out.layer_losses)

    def eval_sums(self, model, batch):
        # The eval step does not keep the stream's advance: every eval draws the same masks (comparable over a run).
        images, mask = batch["image"], batch["mask"]
        predictions, targets, _, _ = model.forward(images, train=False)

        def per_example(p, t):
            return model.losses([x[None] for x in p], [x[None] for x in t])

        loss, terms = jax.vmap(per_example)(predictions, targets)  # [B], [B, depth]
        sums = {"loss": jnp.sum(loss * mask), "count": jnp.sum(mask)}
        sums.update(self._layer_metrics(jnp.sum(terms * mask[:, None], axis=0)))
        return sums

    # ---- hooks ----------------------------------------------------------------------------------------------------
    def on_step_end(self, trainer: Any, step: int) -> None:
        """Export the trained part (official keys) next to every checkpoint: `<workdir>/maskalign_pretrain.npz`."""
        every = int(self.config.get("checkpoint_every", 0))
        if step != trainer.total_steps and not (every and step % every == 0):
            return
        if jax.process_index() == 0:
            export_npz(trainer.eval_model(), os.path.join(trainer.workdir, EXPORT_NAME))


def export_npz(model: MaskAlign, path: str) -> str:
    """Write `export_official_state_dict(model)` to `path` (.npz) atomically (a partial file never replaces a good
    one); returns `path`."""
    arrays = export_official_state_dict(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial.npz"
    np.savez(partial, **arrays)
    os.replace(partial, path)
    return path
