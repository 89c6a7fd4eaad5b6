"""ILA training through the shared trainer (task "ila_video_classification").

The generic `zoo.tasks.video_classification` task (CE + the summed cosine losses, clip mixup / cutmix, the multi-view
eval, the epoch for the mask-jitter decay), plus the X-CLIP head's class texts for the Kinetics variants: the class
names (template "{}", as the official code), tokenised once with the CLIP tokenizer and passed as `text_tokens` to
every forward. The SSv2 (linear head) variants need no texts.

Config (besides the generic task's): model.{clip_weights (OpenAI / open_clip CLIP weights the towers start from, as
the official training; with the CLIP parts frozen and `checkpoint_frozen=False` they are reloaded from here), bpe_path (CLIP's `bpe_simple_vocab_16e6.txt.gz`; default: the copy a
package ships, see `models.clip.tokenizer.default_vocab_path`), class_names_file (one name per line, or an SSv2-style
labels JSON; default: the train source's class names)}.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax.numpy as jnp
import ml_collections
import numpy as np

from zoo.tasks import register_task
from zoo.tasks.video_classification import VideoClassificationTask


def read_class_names(path: str) -> list[str]:
    """Class names from a text file (one per line), an "id,name" CSV (the official labels files) or a JSON list /
    {name: index} dict."""
    import json

    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".csv"):  # the official labels/*.csv: "id,name" rows under a header
        import csv

        rows = [row for row in csv.reader(text.splitlines()) if row]
        if rows and not rows[0][0].strip().isdigit():
            rows = rows[1:]
        return [row[-1].strip() for row in sorted(rows, key=lambda row: int(row[0]))]
    if path.endswith(".json"):
        data = json.loads(text)
        if isinstance(data, dict):
            return [name for name, _ in sorted(data.items(), key=lambda item: int(item[1]))]
        return [str(name) for name in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


@register_task("ila_video_classification")
class ILAVideoTask(VideoClassificationTask):
    """Video classification with an ILA model; feeds the class texts to the X-CLIP (Kinetics) head."""

    config_keys: ClassVar[dict[str, Any]] = {"model": {"bpe_path": None, "class_names_file": None,
                                                       "clip_weights": None}}

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self._text_tokens: np.ndarray | None = None

    # ---- weights ---------------------------------------------------------------------------------------------------
    def pretrained_source(self) -> str | None:
        model = self.config.model
        return model.get("pretrained", "") or model.get("clip_weights", "") or None

    def build_pretrained(self, pretrained: str, rngs):
        """A whole ILA checkpoint (`model.pretrained`: official `.pth` or orbax run) or, for training from CLIP as
        the official code does, the OpenAI / open_clip CLIP weights (`model.clip_weights`) into the towers."""
        import zoo
        from models.ila.convert import load_clip_weights
        from zoo.convert import read_checkpoint

        name, overrides = self.model_name(), self.model_overrides()
        whole = self.config.model.get("pretrained", "")
        if whole:
            return zoo.create_model(name, pretrained=whole, rngs=rngs, **overrides)
        model = zoo.create_model(name, rngs=rngs, **overrides)
        return load_clip_weights(model, read_checkpoint(self.config.model.clip_weights))

    def class_names(self) -> list[str]:
        path = self.config.model.get("class_names_file", "")
        if path:
            names = read_class_names(path)
        else:
            names = getattr(self.data_source("train"), "class_names", None)
            if not names:
                raise ValueError("the X-CLIP head needs class names: set config.model.class_names_file, or use a "
                                 "source that knows its class names")
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names but data.num_classes = {self.num_classes}")
        return list(names)

    def text_tokens(self) -> np.ndarray:
        """(num_classes, 77) int32 CLIP token ids of the class names (computed once)."""
        if self._text_tokens is None:
            from models.clip.tokenizer import ClipTokenizer

            tokenizer = ClipTokenizer(self.config.model.get("bpe_path", "") or None)
            self._text_tokens = np.asarray(tokenizer(self.class_names()), np.int32)
        return self._text_tokens

    def call_model(self, model, videos, batch, *, train: bool):
        if getattr(model, "head", None) != "xclip":
            return super().call_model(model, videos, batch, train=train)
        kwargs = {"text_tokens": jnp.asarray(self.text_tokens())}
        if train and "epoch" in batch:
            kwargs["epoch"] = batch["epoch"][0]
        return model(videos, train=train, **kwargs)
