"""Tasks: what the trainer trains. `get_task(name)` returns the Task class for a config's `task` entry."""

from __future__ import annotations

import difflib
import importlib

from zoo.tasks.base import Task

# name -> "module:Class"; imported lazily so a task's heavy dependencies load only when it is used.
TASKS = {
    "classification": "zoo.tasks.classification:ClassificationTask",
    "segmentation": "zoo.tasks.segmentation:PromptableSegmentationTask",
    "video_segmentation": "zoo.tasks.video_segmentation:VideoSegmentationTask",
}


def get_task(name: str) -> type[Task]:
    """The Task class registered as `name`; an unknown name lists the valid ones."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=3)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown task {name!r}.{hint} Valid tasks: {', '.join(sorted(TASKS))}")
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["TASKS", "Task", "get_task"]
