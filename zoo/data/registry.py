"""Named datasets: `get_source("sklearn_digits", split="train")`, `"tfds:<name>"`, `"folder:<path>"`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.data import embedded
from zoo.data.sources import ImageFolderSource, Source, TfdsSource

SourceFactory = Callable[..., Source]

_SOURCES: dict[str, SourceFactory] = {}
_PREFIXES = ("tfds:<name>", "folder:<path>")


def register_source(name: str, factory: SourceFactory, *, overwrite: bool = False) -> None:
    """Register `factory(split=..., **kwargs) -> Source` under `name`."""
    if ":" in name:
        raise ValueError(f"source names may not contain ':' (reserved for prefixes {_PREFIXES}): {name!r}")
    if name in _SOURCES and not overwrite:
        raise ValueError(f"source {name!r} is already registered")
    _SOURCES[name] = factory


def list_sources() -> list[str]:
    """Registered dataset names plus the prefix forms."""
    return sorted(_SOURCES) + list(_PREFIXES)


def _folder_source(path: str, split: str | None, **kwargs: Any) -> ImageFolderSource:
    root = Path(path).expanduser()
    if split in (None, "all"):
        return ImageFolderSource(root, **kwargs)
    split_root = root / split
    if not split_root.is_dir():
        raise FileNotFoundError(
            f"split folder {str(split_root)!r} not found; expected <root>/<split>/<class_name>/<image>.jpg|png "
            f"(or pass split=None to read <root>/<class_name>/<image> directly)"
        )
    return ImageFolderSource(split_root, **kwargs)


def get_source(name: str, split: str | None = "train", **kwargs: Any) -> Source:
    """Build a source by name.

    Names: the registered ones (`list_sources()`, e.g. "sklearn_digits", "opencv_digits"),
    "tfds:<name>" (a prepared TFDS dataset; kwargs go to `TfdsSource`, e.g. data_dir=) and
    "folder:<path>" (`<path>/<split>/<class>/<image>`, or `<path>/<class>/<image>` with split=None).
    """
    if name.startswith("tfds:"):
        return TfdsSource(name.removeprefix("tfds:"), split=split or "train", **kwargs)
    if name.startswith("folder:"):
        return _folder_source(name.removeprefix("folder:"), split, **kwargs)
    if name not in _SOURCES:
        raise KeyError(f"unknown dataset {name!r}; valid names: {', '.join(list_sources())}")
    return _SOURCES[name](split=split, **kwargs)


register_source("sklearn_digits", embedded.sklearn_digits)
register_source("opencv_digits", embedded.opencv_digits)
