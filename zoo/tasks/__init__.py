"""Tasks: what the trainer trains. `get_task(name)` returns the Task class for a config's `task` entry.

Tasks register by name with `@register_task("name")`, like models. Model-agnostic tasks live in `zoo/tasks/*.py`;
a task that only one family can run lives in that family's folder, `models/<family>/tasks.py` (or a `tasks/`
package). Both are found by name (`zoo.discovery`) and imported lazily, the first time a name is not yet known (the
model-agnostic ones first) or on `list_tasks()`, so a task's heavy dependencies load only when it is used, and no
list of tasks is kept here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from zoo import discovery
from zoo.tasks.base import Task

_TASKS: dict[str, type[Task]] = {}
# Modules of this package that define no task.
_NOT_TASK_MODULES = frozenset({"zoo.tasks.base"})


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator registering a `Task` subclass under `name` (the config's `task` entry)."""

    def decorate(cls: type[Task]) -> type[Task]:
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"register_task({name!r}) decorates Task subclasses; got {cls!r}")
        existing = _TASKS.get(name)
        # The same class seen again (a module re-imported) is not a clash; two different classes under one name are.
        if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"task name {name!r} is registered twice ({existing.__module__}.{existing.__qualname__} "
                             f"and {cls.__module__}.{cls.__qualname__})")
        _TASKS[name] = cls
        return cls

    return decorate


def _import_task_modules(wanted: str | None = None) -> None:
    """Import the task modules: `zoo.tasks.*` first, then the families' `models.<family>.tasks`, stopping as soon as
    `wanted` is registered (a model-agnostic task imports no model family). Import errors propagate."""
    local = [name for name in discovery.submodule_names(__name__) if name not in _NOT_TASK_MODULES]
    for group in (local, discovery.family_modules("tasks")):
        discovery.import_all(group)
        if wanted is not None and wanted in _TASKS:
            return


def list_tasks() -> list[str]:
    """Sorted names of every registered task (imports all task modules)."""
    _import_task_modules()
    return sorted(_TASKS)


def get_task(name: str) -> type[Task]:
    """The Task class registered as `name`; an unknown name raises a KeyError naming the closest and the valid ones."""
    if name not in _TASKS:
        _import_task_modules(name)
    if name not in _TASKS:
        close = difflib.get_close_matches(name, list(_TASKS), n=3)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown task {name!r}.{hint} Valid tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


__all__ = ["Task", "get_task", "list_tasks", "register_task"]
