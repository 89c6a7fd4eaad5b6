"""Find model families and their modules by name, so `zoo/` keeps no list of them and never imports `models`.

A family is a sub-package of the top-level `models` package (`models/<family>/__init__.py`), except `models.layers`,
the shared block library, which registers nothing. The model registry imports families to collect their
`@register_model` builders; the task registry imports `models.<family>.tasks` where a family has one. Names are
read from the file system (`pkgutil`), so finding them imports nothing; importing is left to the caller, by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from types import ModuleType

MODELS_PACKAGE = "models"
# Sub-packages of `models` that are not families: the shared blocks every family builds on.
NOT_FAMILIES = frozenset({"layers"})


def submodule_names(package: str, *, packages_only: bool = False) -> list[str]:
    """Sorted dotted names of the direct submodules of `package` (e.g. "zoo.tasks.classification").

    Nothing but `package` itself (and its parents) is imported; a package that does not exist has no submodules.
    Private names (a leading underscore) are left out.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        return []
    return sorted(
        f"{package}.{info.name}"
        for info in pkgutil.iter_modules(list(spec.submodule_search_locations))
        if not info.name.startswith("_") and (info.ispkg or not packages_only)
    )


def family_names() -> list[str]:
    """Dotted names of every model family ("models.vit", "models.sam2", ...), sorted."""
    prefix = MODELS_PACKAGE + "."
    return [name for name in submodule_names(MODELS_PACKAGE, packages_only=True)
            if name.removeprefix(prefix) not in NOT_FAMILIES]


def family_modules(module: str) -> list[str]:
    """Dotted names `models.<family>.<module>` of the families that have such a module (file or package).

    Found from the file system: a family without the module is not imported.
    """
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    roots = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []
    found = []
    for family in family_names():
        folders = [os.path.join(root, family.removeprefix(MODELS_PACKAGE + ".")) for root in roots]
        if any(info.name == module for info in pkgutil.iter_modules(folders)):
            found.append(f"{family}.{module}")
    return found


def import_all(names: list[str]) -> list[ModuleType]:
    """Import every module in `names`, in order. Any import error (a missing optional dependency included)
    propagates: a family or task module that exists but cannot be imported is a real error, not an absent one."""
    return [importlib.import_module(name) for name in names]
