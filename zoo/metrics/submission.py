"""Submission files of the referring video segmentation servers, written while masks stream out of a model.

    with SubmissionWriter("Annotations.zip", "ref_youtube_vos") as writer:
        writer.add(video, exp_id, frame_name, mask_hw)        # bool / 0-1 / 0-255 mask, one frame

- "ref_youtube_vos" (CodaLab Ref-YouTube-VOS): `Annotations/<video>/<exp_id>/<frame>.png` in the zip;
- "mevis" (CodaLab MeViS): `<video>/<exp_id>/<frame>.png` at the zip's root.
Each PNG is 8-bit greyscale, 255 on the object and 0 elsewhere, as the official inference scripts save them. The
zip is written to `<path>.partial` and renamed when the `with` block ends without an error, so an interrupted run
never leaves a truncated file under the final name (nor replaces an earlier good one).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from typing import Self

import numpy as np

LAYOUTS = {"ref_youtube_vos": "Annotations/", "mevis": ""}


def _check_name(kind: str, value: str) -> str:
    value = str(value)
    if not value or "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError(f"{kind} {value!r} is not a valid file name (no path separators, not empty)")
    return value


def mask_png(mask: np.ndarray) -> bytes:
    """A 2-D mask (bool, {0, 1} or {0, 255}; anything > 0.5 of the maximum is object) -> 8-bit PNG bytes."""
    from PIL import Image

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a submission mask is one frame (H, W); got shape {mask.shape}")
    if mask.dtype == bool:
        binary = mask
    else:
        scale = 255.0 if mask.dtype == np.uint8 and mask.max(initial=0) > 1 else 1.0
        binary = mask.astype(np.float32) > 0.5 * scale
    buffer = io.BytesIO()
    Image.fromarray(binary.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


class SubmissionWriter:
    """Streams masks into a server's submission zip (see the module docstring); use it as a context manager."""

    def __init__(self, path: str | os.PathLike, benchmark: str):
        if benchmark not in LAYOUTS:
            raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {sorted(LAYOUTS)}")
        self.path = os.fspath(path)
        self.prefix = LAYOUTS[benchmark]
        self.partial = self.path + ".partial"
        self._zip: zipfile.ZipFile | None = None
        self._names: set[str] = set()

    def __enter__(self) -> Self:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._zip = zipfile.ZipFile(self.partial, "w", compression=zipfile.ZIP_DEFLATED)
        return self

    def add(self, video: str, exp_id: str | int, frame: str, mask: np.ndarray) -> str:
        """Add one frame's mask; returns its name in the zip. A frame written twice is an error."""
        if self._zip is None:
            raise RuntimeError("use SubmissionWriter in a `with` block")
        name = (f"{self.prefix}{_check_name('video', video)}/{_check_name('expression id', str(exp_id))}/"
                f"{_check_name('frame', frame)}.png")
        if name in self._names:
            raise ValueError(f"{name} was already written")
        self._zip.writestr(name, mask_png(mask))
        self._names.add(name)
        return name

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._zip is not None
        self._zip.close()
        self._zip = None
        if exc_type is None:
            os.replace(self.partial, self.path)
        # On an error the partial zip stays at `<path>.partial` for inspection, never under the final name.

    def __len__(self) -> int:
        return len(self._names)


def read_submission(path: str | os.PathLike, benchmark: str) -> Iterator[tuple[str, str, str, np.ndarray]]:
    """(video, exp_id, frame, bool mask) for every PNG of a submission zip in `benchmark`'s layout."""
    from PIL import Image

    prefix = LAYOUTS[benchmark]
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            if not name.endswith(".png"):
                continue
            if not name.startswith(prefix):
                raise ValueError(f"{path}: {name} is outside the {benchmark} layout ({prefix or 'the root'}<video>/...)")
            parts = name[len(prefix):].split("/")
            if len(parts) != 3:
                raise ValueError(f"{path}: {name} is not <video>/<exp_id>/<frame>.png")
            with Image.open(io.BytesIO(archive.read(name))) as image:
                mask = np.asarray(image) > 127
            yield parts[0], parts[1], parts[2][: -len(".png")], mask
