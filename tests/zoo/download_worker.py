"""A tiny registered ViT whose official weights come from a URL, for tests/zoo/test_download.py.

    python download_worker.py NAME URL SHA256     # one process of the "two processes at once" test: prints the path
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from flax import nnx

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10}


def tiny_vit(*, rngs: nnx.Rngs, **overrides: Any):
    """The tiny ViT (timm layout) the download tests serve."""
    from models.vit.model import VisionTransformer

    return VisionTransformer(rngs=rngs, **dict(TINY, **overrides))


def register(name: str, **source: str) -> None:
    """Register `tiny_vit` as `name` with the weight source `source` (PretrainedCfg fields)."""
    from models.vit.convert import convert_vit
    from zoo.registry import _REGISTRY, PretrainedCfg, register_model

    _REGISTRY.pop(name, None)
    register_model(name, cfg=PretrainedCfg(input_size=(32, 32, 3), num_classes=10, **source),
                   converter=convert_vit)(tiny_vit)


def main() -> None:
    name, url, sha256 = sys.argv[1:4]
    register(name, file_url=url, sha256=sha256)
    from zoo import download

    print(download.pretrained_path(name, progress=False))


if __name__ == "__main__":
    main()
