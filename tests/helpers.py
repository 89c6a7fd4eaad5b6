"""Helpers for tests: optional reference packages and real images."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest


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
