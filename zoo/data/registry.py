"""Named datasets: `get_source("sklearn_digits", split="train")`, `"tfds:<name>"`, `"folder:<path>"`.

Prefix forms other modules add with `register_prefix` ("videofolder:<path>", "videolist:<file>", ...) are found the
same lazy way as names.

Modules of `zoo.data` register their sources when imported (`zoo.data.video`: "vtest_person_masks", ...). A name
not yet known makes the registry import every `zoo.data` submodule once, so any source is reachable by name without
the caller importing its module first, and no list of source modules is kept here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo import discovery
from zoo.data import embedded
from zoo.data.sources import ImageFolderSource, Source, TfdsSource

SourceFactory = Callable[..., Source]

_SOURCES: dict[str, SourceFactory] = {}
_PREFIXES = ("tfds:<name>", "folder:<path>")
# prefix -> (factory(argument, split=..., **kwargs), what the argument is)
_PREFIX_FACTORIES: dict[str, tuple[Callable[..., Source], str]] = {}


def register_source(name: str, factory: SourceFactory, *, overwrite: bool = False) -> None:
    """Register `factory(split=..., **kwargs) -> Source` under `name`."""
    if ":" in name:
        raise ValueError(f"source names may not contain ':' (reserved for prefixes {_PREFIXES}): {name!r}")
    if name in _SOURCES and not overwrite:
        raise ValueError(f"source {name!r} is already registered")
    _SOURCES[name] = factory


def register_prefix(prefix: str, factory: Callable[..., Source], *, argument: str = "path") -> None:
    """Register `get_source("<prefix>:<argument>", split=..., **kw)` -> `factory(argument, split=split, **kw)`.

    Re-registering a prefix replaces it (a module reload); "tfds" and "folder" are built in.
    """
    if not prefix or ":" in prefix or prefix in ("tfds", "folder"):
        raise ValueError(f"invalid source prefix {prefix!r}")
    _PREFIX_FACTORIES[prefix] = (factory, argument)


def _import_source_modules() -> None:
    # `zoo.data` is this module's package; its submodules are light (numpy, PIL; video decoding imports PyAV only
    # when a video is read), so importing all of them to find a name is cheap. Import errors propagate.
    discovery.import_all(discovery.submodule_names(__name__.rpartition(".")[0]))


def list_sources() -> list[str]:
    """Registered dataset names (of every `zoo.data` module) plus the prefix forms."""
    _import_source_modules()
    extra = [f"{prefix}:<{argument}>" for prefix, (_, argument) in sorted(_PREFIX_FACTORIES.items())]
    return sorted(_SOURCES) + list(_PREFIXES) + extra


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
    "folder:<path>" (`<path>/<split>/<class>/<image>`, or `<path>/<class>/<image>` with split=None), and the
    prefixes of `register_prefix` (`zoo.data.video_sources`: "videofolder:", "videolist:", "ssv2:", "tfdsvideo:").
    """
    if name.startswith("tfds:"):
        return TfdsSource(name.removeprefix("tfds:"), split=split or "train", **kwargs)
    if name.startswith("folder:"):
        return _folder_source(name.removeprefix("folder:"), split, **kwargs)
    prefix, colon, argument = name.partition(":")
    if colon:
        if prefix not in _PREFIX_FACTORIES:
            _import_source_modules()
        if prefix not in _PREFIX_FACTORIES:
            raise KeyError(f"unknown source prefix {prefix!r} in {name!r}. Valid names: {', '.join(list_sources())}")
        return _PREFIX_FACTORIES[prefix][0](argument, split=split, **kwargs)
    if name not in _SOURCES:
        _import_source_modules()
    if name not in _SOURCES:
        close = difflib.get_close_matches(name, list(_SOURCES), n=3)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown dataset {name!r}.{hint} Valid names: {', '.join(list_sources())}")
    return _SOURCES[name](split=split, **kwargs)


register_source("sklearn_digits", embedded.sklearn_digits)
register_source("opencv_digits", embedded.opencv_digits)
