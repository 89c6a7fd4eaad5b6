"""RefCOCO / RefCOCO+ / RefCOCOg images with referring expressions, as 1-frame clips (SAMWISE's RIS pre-training).

    source = zoo.data.get_source("refcoco:/data/coco", split="train", dataset="refcoco+", size=1024)
    example = source[0]   # the keys of zoo.data.refvos with T = 1: "frames" uint8 (1, S, S, 3), "masks" (1, S, S),
                          # "valid_region", "expression", "video_id" (the COCO image id), "exp_id" (the sentence id)

Two layouts under the COCO root (`<root>/train2014/<file_name>` holds the images; `image_dir=` overrides it):
- converted, what the official `main_pretrain.py` reads: `<root>/<dataset>/instances_<dataset>_<split>.json` made by
  `tools/data/convert_refexp_to_coco.py` (one COCO "image" per sentence with its "caption", one annotation each);
- raw, what that converter reads: `<root>/<dataset>/refs(<split_by>).p` + `<root>/<dataset>/instances.json` (the
  REFER API files; split_by "unc" for refcoco / refcoco+, "umd" for refcocog). Refs are selected as
  `REFER.getRefIds(split=...)`: "train" / "val" exactly, "test" any test split, "testA" / "testB" / "testC" those
  containing the letter. One example per sentence. The `.p` file is a pickle: it is read with an unpickler that
  accepts only plain data (dicts, lists, strings, numbers) and refuses any class or function reference, so a
  tampered file cannot run code; anything else is a `RefVOSFormatError` that says to convert the refs to JSON.

Masks: the union of the referred annotation's segmentation (COCO polygons, rasterised exactly as pycocotools'
`frPyObjects` + `decode`; or an RLE), the official `ConvertCocoPolysToMask` with `mask.any(dim=2)`; crowd
annotations and boxes of zero width or height are dropped as there. Resizing as in `zoo.data.refvos`.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.refvos import _load_json, _require_dir, clean_caption
from zoo.data.refvos_clips import RefVOSFormatError, resize_and_pad, rle_decode
from zoo.data.sources import _check_index, load_image_rgb

DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd", "refclef": "unc"}


# ------------------------------------------------------------------------------------------------ polygons
def polygon_to_mask(polygon: Sequence[float], height: int, width: int) -> np.ndarray:
    """Rasterise one COCO polygon [x0, y0, x1, y1, ...] to uint8 (height, width), as pycocotools' `rleFrPoly`.

    The boundary is traced at 5x resolution, its crossings of pixel-centre columns become run boundaries (so a pixel
    is inside when its centre is), exactly what `pycocotools.mask.frPyObjects` encodes.
    """
    xy = np.asarray(polygon, np.float64).reshape(-1, 2)
    k, scale = len(xy), 5.0
    if k < 3:
        raise RefVOSFormatError(f"a polygon needs at least 3 points; got {k}")
    x = [int(scale * px + 0.5) for px in xy[:, 0]] + [int(scale * xy[0, 0] + 0.5)]
    y = [int(scale * py + 0.5) for py in xy[:, 1]] + [int(scale * xy[0, 1] + 0.5)]
    u, v = [], []
    for j in range(k):
        xs, xe, ys, ye = x[j], x[j + 1], y[j], y[j + 1]
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx >= dy:
            s = (ye - ys) / dx if dx else 0.0
            for d in range(dx + 1):
                t = dx - d if flip else d
                u.append(t + xs)
                v.append(int(ys + s * t + 0.5))
        else:
            s = (xe - xs) / dy
            for d in range(dy + 1):
                t = dy - d if flip else d
                v.append(t + ys)
                u.append(int(xs + s * t + 0.5))
    starts = []
    for j in range(1, len(u)):
        if u[j] == u[j - 1]:
            continue
        xd = (float(u[j] if u[j] < u[j - 1] else u[j] - 1) + 0.5) / scale - 0.5
        if math.floor(xd) != xd or xd < 0 or xd > width - 1:
            continue
        yd = min(v[j - 1], v[j]) + 0.5
        yd = min(max(yd / scale - 0.5, 0.0), float(height))
        starts.append(int(xd) * height + math.ceil(yd))
    starts.append(height * width)
    starts.sort()
    deltas = np.diff(np.asarray([0] + starts, np.int64)).tolist()
    counts = [deltas[0]]
    j = 1
    while j < len(deltas):  # merge zero-length runs, as rleFrPoly does
        if deltas[j] > 0:
            counts.append(deltas[j])
            j += 1
        else:
            j += 1
            if j < len(deltas):
                counts[-1] += deltas[j]
                j += 1
    total = sum(counts)
    if total < height * width:  # pycocotools' decode stops at h * w; the remainder is background
        counts.append(height * width - total)
    return rle_decode({"size": [height, width], "counts": counts})


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Bool (height, width) union of a COCO segmentation: a list of polygons, or an RLE (compressed or not)."""
    if isinstance(segmentation, Mapping):
        return rle_decode(segmentation).astype(bool)
    if not isinstance(segmentation, (list, tuple)):
        raise RefVOSFormatError(f"unknown COCO segmentation {str(segmentation)[:80]}")
    out = np.zeros((height, width), bool)
    for polygon in segmentation:
        out |= polygon_to_mask(polygon, height, width).astype(bool)
    return out


# ------------------------------------------------------------------------------------------------ pickle
class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, strings and numbers only: every class or function reference is refused."""

    def __init__(self, file: Any, path: Path):
        super().__init__(file, encoding="utf-8")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        raise RefVOSFormatError(
            f"{str(self.path)!r} references {module}.{name}; only plain-data pickles (dicts, lists, strings, numbers) "
            "are read. Convert the refs to JSON (a list of ref dicts) and pass refs_json=, or use the converted "
            "instances_<dataset>_<split>.json layout"
        )


def load_plain_pickle(path: str | os.PathLike) -> Any:
    """Read a pickle of plain data (the REFER `refs(<split_by>).p`) without running any code it might name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"refs file {str(path)!r} not found")
    try:
        return _PlainDataUnpickler(io.BytesIO(path.read_bytes()), path).load()
    except RefVOSFormatError:
        raise
    except Exception as err:  # any unpickling failure is a malformed file
        raise RefVOSFormatError(f"{str(path)!r} is not a readable refs pickle ({type(err).__name__}: {err})") from err


# ------------------------------------------------------------------------------------------------ the source
class RefImageSource:
    """One example per (image, sentence): a 1-frame referring clip (module docstring for the keys).

    records: (image path, height, width, [segmentations], caption, image id, sentence id).
    """

    def __init__(
        self,
        records: Sequence[tuple[Path, int, int, list[Any], str, str, str]],
        *,
        size: int | None = 1024,
        name: str = "RefCOCO",
    ):
        self.records, self.size, self.name = list(records), size, name

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, height, width, segmentations, caption, image_id, sentence_id = self.records[
            _check_index(index, len(self))
        ]
        if not path.is_file():
            raise FileNotFoundError(f"image {str(path)!r} not found (image id {image_id})")
        image = load_image_rgb(path)
        if image.shape[:2] != (height, width):
            raise RefVOSFormatError(f"image {str(path)!r} is {image.shape[:2]}, its annotation says {(height, width)}")
        mask = np.zeros((height, width), bool)
        for segmentation in segmentations:
            mask |= segmentation_to_mask(segmentation, height, width)
        example = {
            "frames": image[None],
            "masks": mask[None].astype(np.uint8),
            "object_present": mask.any()[None],
            "expression": np.str_(caption),
            "video_id": np.str_(image_id),
            "exp_id": np.str_(sentence_id),
            "frame_ids": np.zeros(1, np.int32),
            "frame_names": np.array([path.name]),
        }
        if self.size is not None:
            example.update(resize_and_pad(example["frames"], example["masks"], self.size))
        return example

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """Example `index` (nothing random: the official RIS transform is a fixed resize)."""
        return self[index]

    def __repr__(self) -> str:
        return f"RefImageSource({self.name}: examples={len(self)}, size={self.size})"


def _kept(annotation: Mapping[str, Any], height: int, width: int) -> bool:
    # ConvertCocoPolysToMask: drop crowds and boxes that are empty after clamping to the image.
    if annotation.get("iscrowd", 0):
        return False
    x, y, w, h = annotation["bbox"]
    return min(x + w, width) > max(x, 0) and min(y + h, height) > max(y, 0)


def _select_refs(refs: Sequence[Mapping[str, Any]], split: str, path: Path) -> list[Mapping[str, Any]]:
    if split in ("testA", "testB", "testC"):
        return [r for r in refs if split[-1] in r["split"]]
    if split in ("testAB", "testBC", "testAC"):
        return [r for r in refs if r["split"] == split]
    if split == "test":
        return [r for r in refs if "test" in r["split"]]
    if split in ("train", "val"):
        return [r for r in refs if r["split"] == split]
    raise ValueError(f"unknown RefCOCO split {split!r} for {str(path)!r}; use train, val, test, testA, testB, testC")


def refcoco(
    root: str | os.PathLike,
    split: str | None = "train",
    *,
    dataset: str = "refcoco",
    split_by: str | None = None,
    image_dir: str | os.PathLike | None = None,
    refs_json: str | None = None,
    size: int | None = 1024,
) -> RefImageSource:
    """RefCOCO-style referring images (module docstring): the converted layout when present, else the raw one."""
    root = _require_dir(Path(root).expanduser(), "COCO root")
    split = "train" if split in (None, "all") else ("val" if split in ("valid", "validation", "eval") else split)
    data_dir = _require_dir(root / dataset, f"{dataset} annotation")
    images = Path(image_dir).expanduser() if image_dir is not None else root / "train2014"
    _require_dir(images, "COCO image")
    converted = data_dir / f"instances_{dataset}_{split}.json"
    records = []
    if converted.is_file():
        coco = _load_json(converted, "annotation file")
        by_image: dict[Any, list[Any]] = {}
        for annotation in coco.get("annotations", []):
            by_image.setdefault(annotation["image_id"], []).append(annotation)
        for image in coco.get("images", []):
            if "caption" not in image:
                raise RefVOSFormatError(
                    f"{str(converted)!r}: image {image.get('id')} has no 'caption' (not a converted referring file)"
                )
            height, width = int(image["height"]), int(image["width"])
            segmentations = [a["segmentation"] for a in by_image.get(image["id"], []) if _kept(a, height, width)]
            records.append(
                (
                    images / image["file_name"],
                    height,
                    width,
                    segmentations,
                    clean_caption(image["caption"]),
                    str(image.get("original_id", image["id"])),
                    str(image["id"]),
                )
            )
        return RefImageSource(records, size=size, name=f"{dataset} {split} (converted)")
    split_by = split_by or DEFAULT_SPLIT_BY.get(dataset, "unc")
    refs_path = Path(refs_json) if refs_json is not None else data_dir / f"refs({split_by}).p"
    instances_path = data_dir / "instances.json"
    if not refs_path.is_file():
        raise FileNotFoundError(
            f"neither {str(converted)!r} (converted layout) nor {str(refs_path)!r} (raw REFER layout) found"
        )
    refs = _load_json(refs_path, "refs file") if refs_path.suffix == ".json" else load_plain_pickle(refs_path)
    instances = _load_json(instances_path, "instances file")
    anns = {a["id"]: a for a in instances.get("annotations", [])}
    imgs = {i["id"]: i for i in instances.get("images", [])}
    if not isinstance(refs, list):
        raise RefVOSFormatError(f"{str(refs_path)!r} must hold a list of refs; got {type(refs).__name__}")
    for ref in _select_refs(refs, split, refs_path):
        try:
            image, annotation = imgs[ref["image_id"]], anns[ref["ann_id"]]
        except KeyError as err:
            raise RefVOSFormatError(
                f"{str(refs_path)!r}: ref {ref.get('ref_id')} names {err} missing from {str(instances_path)!r}"
            ) from err
        height, width = int(image["height"]), int(image["width"])
        segmentations = [annotation["segmentation"]] if _kept(annotation, height, width) else []
        for sentence in ref["sentences"]:
            records.append(
                (
                    images / image["file_name"],
                    height,
                    width,
                    segmentations,
                    clean_caption(sentence["sent"]),
                    str(image["id"]),
                    str(sentence["sent_id"]),
                )
            )
    return RefImageSource(records, size=size, name=f"{dataset} {split} ({split_by})")


def register() -> None:
    """Register the prefix "refcoco:" (the COCO root; dataset= picks refcoco / refcoco+ / refcocog)."""
    from zoo.data.registry import register_prefix

    register_prefix("refcoco", refcoco, argument="coco root")


register()
