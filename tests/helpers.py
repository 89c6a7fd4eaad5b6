"""Helpers for tests: optional reference packages, real images, a temporary zoo cache and scripts run in a fresh
interpreter."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """True under .ci/run (CI=true), where every reference package must be installed."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str, install_hint: str = "pip install -e .[test]"):
    """Import a test-only reference package (torch, timm, open_clip, sam2, gsplat ...).

    In CI a missing package is a failure (the suite must not silently skip parity); on a developer machine the test
    is skipped with a message saying what to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if in_ci():
            raise
        pytest.skip(f"{module} not installed ({err}); {install_hint}")


def real_photo(name: str = "china", size: int | None = None) -> np.ndarray:
    """A real RGB photo (uint8 HWC) shipped inside scikit-learn: 'china' or 'flower'; optionally resized square."""
    import sklearn.datasets
    from PIL import Image

    path = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", f"{name}.jpg")
    image = Image.open(path).convert("RGB")
    if size is not None:
        image = image.resize((size, size), Image.BICUBIC)
    return np.asarray(image)


def temporary_zoo_cache(tmp_path_factory) -> Iterator[None]:
    """The body of a module fixture (`yield from temporary_zoo_cache(tmp_path_factory)`): ZOO_CACHE_DIR in a fresh
    temporary folder unless it is set already, and unset again afterwards if it was unset before."""
    old = os.environ.get("ZOO_CACHE_DIR")
    os.environ.setdefault("ZOO_CACHE_DIR", str(tmp_path_factory.mktemp("zoo_cache")))
    yield
    if old is None:
        os.environ.pop("ZOO_CACHE_DIR", None)


def run_result_script(source: str, path: Path, *args: str, timeout: float = 120) -> object:
    """Write the Python `source` to `path`, run it with `args` in a fresh interpreter (this checkout on PYTHONPATH,
    JAX on CPU) and return the JSON it prints on its line that starts with "RESULT". A failing script fails the
    test with the end of its stderr."""
    path.write_text(source)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
    completed = subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line.removeprefix("RESULT"))
