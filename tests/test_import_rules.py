"""The import rules of DESIGN.md ("Who imports whom"), checked statically, and discovery by name.

Every `.py` file of `kernels/`, `models/` and `zoo/` is parsed (AST, nothing is imported) and each import statement
(function-local ones included, relative ones resolved, `importlib.import_module("literal")` too) is checked:
- `kernels/` imports neither `zoo` nor `models`: kernels stand alone;
- nothing under `zoo/` imports `models`: families and tasks are found by name;
- `zoo/data` imports neither `models` nor the trainer (`zoo.train`, `zoo.tasks`);
- the modelling files of `models/` import neither the trainer (`zoo.train`, `zoo.tasks`) nor `zoo.data`; a family's
  task module (`models/<family>/tasks.py` or `tasks/`) may import `zoo.data` and `zoo.tasks`, not `zoo.train`.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kernels", "models", "zoo")


def module_name(relative: Path) -> str:
    """Dotted module name of a repository-relative .py path ("zoo/tasks/__init__.py" -> "zoo.tasks")."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of everything `source` (module `module`) imports, anywhere in the file.

    `from a import b` yields "a" and "a.b" (b may be a submodule: `from zoo import data` imports zoo.data); relative
    imports are resolved against `module`; `importlib.import_module("x")` / `__import__("x")` with a literal
    string yield "x".
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def is_task_module(relative: Path) -> bool:
    """models/<family>/tasks.py or anything under models/<family>/tasks/."""
    parts = relative.parts
    return len(parts) >= 3 and parts[0] == "models" and (parts[2] == "tasks.py" or parts[2] == "tasks")


def forbidden_prefixes(relative: Path) -> tuple[str, ...]:
    """The packages that the file at `relative` (repository-relative) may not import."""
    top = relative.parts[0]
    if top == "kernels":
        return ("zoo", "models")
    if top == "zoo":
        if relative.parts[1:2] == ("data",):
            return ("models", "zoo.train", "zoo.tasks")
        return ("models",)
    if top == "models":
        if is_task_module(relative):
            return ("zoo.train",)
        return ("zoo.train", "zoo.tasks", "zoo.data")
    return ()


def violations(source: str, relative: Path) -> list[str]:
    """Messages "path:line imports name" for each forbidden import in `source`, read as the file at `relative`."""
    forbidden = forbidden_prefixes(relative)
    out = []
    module = module_name(relative)
    for line, name in imported_names(source, module, is_package=relative.name == "__init__.py"):
        for prefix in forbidden:
            if name == prefix or name.startswith(prefix + "."):
                out.append(f"{relative}:{line} imports {name} (not allowed: {prefix})")
                break
    return out


def python_files() -> list[Path]:
    """Repository-relative paths of every .py file in the rule-bound packages."""
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                files.append(path.relative_to(ROOT))
    return files


# ----------------------------------------------------------------------------------------------------------------------
# The scanner catches what it must (so the rules test can fail)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("zoo/registry.py", "def f():\n    import models.vit\n"),  # function-local
        ("zoo/tasks/x.py", "from models.sam2 import SAM2\n"),
        ("zoo/registry.py", "import importlib\nimportlib.import_module('models.vit')\n"),
        ("zoo/data/x.py", "from ..tasks import base\n"),  # relative, resolves to zoo.tasks.base
        ("zoo/data/x.py", "from zoo import train\n"),
        ("kernels/attention.py", "import zoo\n"),
        ("kernels/rasterize/x.py", "from models.layers import mlp\n"),
        ("models/sam2/model.py", "from zoo import data as data_lib\n"),
        ("models/sam2/video.py", "def f():\n    from zoo.tasks.base import Task\n"),
        ("models/vit/convert.py", "import zoo.train.trainer\n"),
        ("models/sam2/tasks.py", "from zoo.train import trainer\n"),
        ("models/sam2/tasks/video.py", "import zoo.train\n"),
    ],
)
def test_scanner_catches_a_violation(path, source):
    assert violations(source, Path(path)), f"{path}: {source!r} should violate the import rules"


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("zoo/registry.py", "from zoo import discovery\nimport importlib\nimportlib.import_module(name)\n"),
        ("zoo/tasks/x.py", "from zoo import data as data_lib\nfrom zoo.tasks.base import Task\n"),
        ("kernels/attention.py", "import jax\nfrom kernels.flash_attention import x\n"),
        ("models/sam2/model.py", "from zoo.registry import register_model\nfrom models.layers import mlp\n"),
        ("models/vit/convert.py", "from zoo.convert import Rule\n"),
        ("models/sam2/tasks.py", "from zoo import data\nfrom zoo.tasks import register_task\n"),
        ("models/sam2/tasks/__init__.py", "from .video import VideoSegmentationTask\nimport zoo.data\n"),
    ],
)
def test_scanner_allows_what_the_rules_allow(path, source):
    assert violations(source, Path(path)) == []


def test_relative_imports_resolve():
    names = [name for _, name in imported_names("from . import a\nfrom ..b import c\n", "zoo.data.video")]
    assert names == ["zoo.data", "zoo.data.a", "zoo.b", "zoo.b.c"]
    names = [name for _, name in imported_names("from .video import x\n", "models.sam2", is_package=True)]
    assert names == ["models.sam2.video", "models.sam2.video.x"]


# ----------------------------------------------------------------------------------------------------------------------
# The repository follows the rules
# ----------------------------------------------------------------------------------------------------------------------


def test_repository_follows_the_import_rules():
    files = python_files()
    assert len(files) > 20 and any(f.parts[0] == "kernels" for f in files)  # the scan sees the packages
    found = []
    for relative in files:
        found += violations((ROOT / relative).read_text(encoding="utf-8"), relative)
    assert not found, "import rules of DESIGN.md broken:\n" + "\n".join(found)


# ----------------------------------------------------------------------------------------------------------------------
# Families, tasks and data sources are found by name
# ----------------------------------------------------------------------------------------------------------------------


def test_families_are_discovered():
    from zoo import discovery

    families = discovery.family_names()
    assert {"models.vit", "models.clip", "models.fcaformer", "models.sam2"} <= set(families)
    assert "models.layers" not in families
    assert "models.sam2.tasks" in discovery.family_modules("tasks")
    assert "models.vit.tasks" not in discovery.family_modules("tasks")


def test_tasks_register_by_name():
    from zoo.tasks import Task, get_task, list_tasks

    names = list_tasks()
    assert {"classification", "segmentation", "video_segmentation"} <= set(names)
    assert get_task("video_segmentation").__module__ == "models.sam2.tasks"
    assert issubclass(get_task("classification"), Task)
    with pytest.raises(KeyError) as error:
        get_task("segmentaton")
    message = str(error.value)
    assert "Did you mean 'segmentation'?" in message and "video_segmentation" in message


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=str(ROOT), timeout=120, check=False)


def test_sources_are_found_without_importing_their_module():
    """In a fresh interpreter: the vtest sources (zoo/data/video.py) resolve by name alone; a typo names them."""
    result = _fresh_python("""
        import sys
        import zoo.data as zd
        assert "zoo.data.video" not in sys.modules
        try:  # the factory runs (and finds no video at this path): the name itself was found
            zd.get_source("vtest_person_masks", split="train", path="/nonexistent/vtest.avi")
        except FileNotFoundError:
            pass
        else:
            raise AssertionError("expected FileNotFoundError from the vtest factory")
        assert "zoo.data.video" in sys.modules
        try:
            zd.get_source("vtest_person_mask")
        except KeyError as err:
            assert "Did you mean 'vtest_person_masks'?" in str(err), err
        assert "vtest_person_clips" in zd.list_sources()
        print("ok")
    """)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_task_lookup_in_a_fresh_interpreter_imports_only_what_it_needs():
    """get_task("classification") needs no model family; the SAM2 tasks load when their name is asked for."""
    result = _fresh_python("""
        import sys
        from zoo.tasks import get_task
        get_task("classification")
        assert not any(name == "models" or name.startswith("models.") for name in sys.modules), sorted(
            n for n in sys.modules if n.startswith("models"))
        assert get_task("segmentation").__name__ == "PromptableSegmentationTask"
        assert "models.sam2.tasks" in sys.modules
        print("ok")
    """)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
