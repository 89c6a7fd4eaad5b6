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


def numpy_random_init(abstract, seed: int = 0, *, param_std=lambda path: 0.1, other=None):
    """A module with random weights drawn in numpy onto `abstract` (an `nnx.eval_shape` result): building a model
    through its own initialisers compiles one XLA program per parameter shape, which dominates a small test's time on
    a busy CPU. Kernels He-normal over their fan-in, norm scales 1, BatchNorm statistics (0 mean, 1 var), other
    Params `param_std(path)` x N(0, 1) (0 for zeros). Non-Param variables are zero, or `other(path, value)` when
    that returns an array. Returns (module, rng) with the rng advanced, for further draws."""
    import jax.numpy as jnp
    from flax import nnx

    rng = np.random.default_rng(seed)
    graphdef, state = nnx.split(abstract)
    flat = []
    for path, leaf in nnx.to_flat_state(state):
        value = leaf.get_value()
        custom = other(path, value) if other is not None and not isinstance(leaf, nnx.Param) else None
        if isinstance(leaf, nnx.BatchStat):
            array = np.full(value.shape, 1.0 if path[-1] == "var" else 0.0)
        elif custom is not None:
            array = custom
        elif isinstance(leaf, nnx.Param) and path[-1] == "kernel":
            array = rng.normal(size=value.shape) * np.sqrt(2.0 / max(np.prod(value.shape[:-1]), 1))
        elif isinstance(leaf, nnx.Param) and path[-1] == "scale":
            array = np.ones(value.shape)
        elif isinstance(leaf, nnx.Param) and param_std(path):
            array = param_std(path) * rng.normal(size=value.shape)
        else:
            array = np.zeros(value.shape)
        flat.append((path, leaf.replace(jnp.asarray(array, value.dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat)), rng
