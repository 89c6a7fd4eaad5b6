"""An embedded real referring-VOS set: the people of OpenCV's vtest.avi, tracked, with generated expressions.

    source = zoo.data.get_source("vtest_referring", split="train", num_frames=8)
    example = source[0]   # the keys of zoo.data.refvos ("frames" uint8 (T, H, W, 3), "masks", "expression", ...,
                          # "frame_ids" = frame numbers of vtest.avi) plus "kind" (which rule made the expression)

Masks are `zoo.data.video.vtest_frames_and_masks` (background subtraction, specs/offline_data.md 2e) over the whole
video (795 frames, every `frame_step`-th = 265 frames, half resolution 288 x 384). Blobs are linked across frames by
IoU, as the spec says, but after moving the track's mask onto the candidate (centroid to centroid), gated by the
constant-velocity prediction and the area ratio: people are ~15 px wide and walk ~14 px per step, so plain IoU
(`zoo.data.video.link_blobs`) loses most of them (see `track_blobs`). Blobs of two or more tracks are merges (a group
track with their summed head count starts) and spread tracks split. Blobs under `min_area` px are fragments.

Clips: T consecutive sampled frames every `clip_stride` frames. Referents are tracks spanning the whole clip whose
blob stays one referent (area within 2x over the clip; a single person never box-wide, width >= 0.6 height, which
marks a merge the tracker missed); the other blobs (people entering or leaving, fragments) still count against
them. Expressions come from what the tracks do over the clip; a rule speaks only when its referent is unambiguous:
- "leftmost" / "rightmost": the centroid is left (right) of every other blob's by `margin` px in every frame;
  "nearest" / "farthest": lowest (highest) feet in the image likewise (the camera looks down on the square);
- "left" / "right" / "towards" / "away": the dominant direction of a track that moved at least `min_motion` px
  between the first and last frame; one such person gives "the person walking to the left", several give "the
  people walking to the left" (their union: MeViS-style multi-object expressions); "still": moved less than
  `min_motion / 2`. Not made when another (partial) track or a group moves the same way;
- "group": the only group of the clip, "the two people walking together" (a merge of two), "the group of three
  people", or "the people walking together" (box-wide from the start, head count unknown);
- "fastest": 1.5x the path length of anyone else, in clips where every blob is a referent.
Phrasings rotate deterministically among a few synonyms ("the leftmost person", "the person on the far left", ...);
"kind" names the rule. Split by time: "train" clips lie in the first 1 - `eval_fraction` of the frames, "eval"
clips in the rest (with the defaults 151 train examples in 76 clips, 11 kinds, 42 distinct expressions; 27 eval
examples in 13 clips, 6 kinds). Tracks and expressions are cached under `$ZOO_CACHE_DIR` (the frames and masks by
`vtest_frames_and_masks` itself); the whole build is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.refvos_clips import resize_and_pad
from zoo.data.sources import _check_index
from zoo.data.video import VTEST_PATH, _cache_dir, vtest_frames_and_masks

_VERSION = 3  # bump when the tracker or the expression rules change (cache key)
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
_PHRASES = {
    "leftmost": ("the leftmost {noun}", "the {noun} furthest to the left", "the {noun} on the far left"),
    "rightmost": ("the rightmost {noun}", "the {noun} furthest to the right", "the {noun} on the far right"),
    "nearest": ("the {noun} closest to the camera", "the {noun} nearest to the camera", "the {noun} in front"),
    "farthest": ("the {noun} farthest from the camera", "the {noun} furthest away", "the {noun} at the back"),
    "left": ("the {noun} walking to the left", "the {noun} heading left", "the {noun} moving leftwards"),
    "right": ("the {noun} walking to the right", "the {noun} heading right", "the {noun} moving rightwards"),
    "towards": ("the {noun} walking towards the camera", "the {noun} coming closer", "the {noun} approaching"),
    "away": ("the {noun} walking away from the camera", "the {noun} moving away", "the {noun} walking off"),
    "still": ("the {noun} standing still", "the {noun} not moving", "the {noun} who stays in place"),
    "fastest": ("the fastest {noun}", "the {noun} walking fastest", "the {noun} moving the quickest"),
}


# ------------------------------------------------------------------------------------------------ tracking
def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    height, width = mask.shape
    if abs(dy) >= height or abs(dx) >= width:
        return out
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = mask[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def _blob_stats(labels: np.ndarray) -> list[dict[int, tuple[float, float, float, int, int, int]]]:
    """Per frame: blob -> (centroid x, centroid y, feet y = lowest row, area, box width, box height)."""
    out = []
    for frame in labels:
        count = int(frame.max())
        ys, xs = np.nonzero(frame)
        ids = frame[ys, xs]
        area = np.bincount(ids, minlength=count + 1)
        cx = np.bincount(ids, xs, minlength=count + 1) / np.maximum(area, 1)
        cy = np.bincount(ids, ys, minlength=count + 1) / np.maximum(area, 1)
        feet = np.full(count + 1, -1.0)
        np.maximum.at(feet, ids, ys.astype(np.float64))
        lo_x, hi_x, lo_y = np.full(count + 1, 1 << 30), np.full(count + 1, -1), np.full(count + 1, 1 << 30)
        np.minimum.at(lo_x, ids, xs)
        np.maximum.at(hi_x, ids, xs)
        np.minimum.at(lo_y, ids, ys)
        out.append(
            {
                k: (
                    float(cx[k]),
                    float(cy[k]),
                    float(feet[k]),
                    int(area[k]),
                    int(hi_x[k] - lo_x[k] + 1),
                    int(feet[k] - lo_y[k] + 1),
                )
                for k in range(1, count + 1)
            }
        )
    return out


def track_blobs(
    labels: np.ndarray, *, min_area: int = 150, min_iou: float = 0.25, min_cover: float = 0.4, max_ratio: float = 2.0
) -> tuple[np.ndarray, dict[int, int]]:
    """Link the blobs of a label video into tracks (module docstring).

    A track can continue on a blob within half its height of its constant-velocity prediction (its full height for
    a track without a velocity yet), of an area within 1 / `max_ratio` .. `max_ratio` of its own, whose IoU with the
    track's mask moved onto it (centroid to centroid) is at least `min_iou`; pairs are taken greedily by IoU. Of the rest, a blob that
    holds at least `min_cover` of the predicted masks of two or more tracks is their merge, and a track whose
    predicted mask holds at least half of two or more blobs splits into them. Returns (assignment (F, max_blob + 1)
    int32: the track id of each blob of each frame, -1 for none; track id -> head count).
    """
    stats = _blob_stats(labels)
    frames, blobs = len(labels), int(labels.max()) + 1
    assignment = np.full((frames, blobs), -1, np.int32)
    counts: dict[int, int] = {}
    active: dict[int, tuple[int, float, float]] = {}  # track -> (blob in the previous frame, velocity x, y)

    def start(frame: int, blob: int, count: int, into: dict) -> None:
        counts[len(counts)] = count
        assignment[frame, blob] = len(counts) - 1
        into[len(counts) - 1] = (blob, 0.0, 0.0)

    for blob, (_, _, _, area, _, _) in stats[0].items():
        if area >= min_area:
            start(0, blob, 1, active)
    for f in range(1, frames):
        previous, current = labels[f - 1], labels[f]
        people = [b for b, s in stats[f].items() if s[3] >= min_area]
        candidates = []
        for track, (blob, vx, vy) in active.items():
            x0, y0, _, area0, _, height = stats[f - 1][blob]
            radius = height / 2 if (vx or vy) else float(height)
            mask = previous == blob
            for b in people:
                x1, y1, _, area1, _, _ = stats[f][b]
                if np.hypot(x1 - x0 - vx, y1 - y0 - vy) > radius or not 1 / max_ratio <= area1 / area0 <= max_ratio:
                    continue
                moved = _shift(mask, round(y1 - y0), round(x1 - x0))
                inter = int((moved & (current == b)).sum())
                iou = inter / (int(moved.sum()) + area1 - inter)
                if iou >= min_iou:
                    candidates.append((iou, track, b))
        continued: dict[int, tuple[int, float, float]] = {}
        taken: set[int] = set()
        for _, track, b in sorted(candidates, reverse=True):
            if track in continued or b in taken:
                continue
            taken.add(b)
            blob = active[track][0]
            continued[track] = (b, stats[f][b][0] - stats[f - 1][blob][0], stats[f][b][1] - stats[f - 1][blob][1])
            assignment[f, b] = track
        born: dict[int, tuple[int, float, float]] = {}
        lost = [t for t in active if t not in continued]
        free = [b for b in people if b not in taken]
        predicted = {t: _shift(previous == active[t][0], round(active[t][2]), round(active[t][1])) for t in lost}
        for b in free:  # merges
            inside = [t for t in lost if (predicted[t] & (current == b)).sum() >= min_cover * predicted[t].sum()]
            if len(inside) > 1:
                taken.add(b)
                start(f, b, sum(counts[t] for t in inside), born)
                lost = [t for t in lost if t not in inside]
        for t in lost:  # splits
            parts = [
                b for b in people if b not in taken and (predicted[t] & (current == b)).sum() >= 0.5 * stats[f][b][3]
            ]
            if len(parts) > 1:
                for b in parts:
                    taken.add(b)
                    start(f, b, 1, born)
        for b in people:
            if b not in taken:
                start(f, b, 1, born)
        active = {**continued, **born}  # the other tracks have ended
    return assignment, counts


# ------------------------------------------------------------------------------------------------ expressions
def _phrase(kind: str, noun: str, salt: int) -> str:
    options = _PHRASES[kind]
    return options[salt % len(options)].format(noun=noun)


def _motion_kind(points: list[tuple[float, float, float, int]], min_motion: float) -> str | None:
    """ "left" / "right" / "towards" / "away" / "still" from (cx, cy, feet, area) per frame, or None (in between)."""
    dx, dy = points[-1][0] - points[0][0], points[-1][2] - points[0][2]
    distance = float(np.hypot(dx, dy))
    if distance >= min_motion:
        return ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("towards" if dy > 0 else "away")
    return "still" if distance < min_motion / 2 else None


def clip_expressions(
    stats: list[dict],
    assignment: np.ndarray,
    counts: dict[int, int],
    start: int,
    length: int,
    *,
    min_area: int = 150,
    margin: float = 3.0,
    min_motion: float = 8.0,
    wide_ratio: float = 0.6,
    max_area_ratio: float = 2.0,
) -> list[tuple[str, str, list[int]]]:
    """[(kind, expression, [track ids])] for the clip of frames start .. start + length - 1 (module docstring).

    The referents are tracks spanning the whole clip; the other person blobs of the clip (people entering, leaving,
    or whose track broke) still count: a superlative must beat them in every frame, and a motion, group or
    "fastest" expression is only made when each of them was seen long enough (3 frames) to show that it does not
    share the property (over its whole track when it is in fewer than 3 frames of the clip; a track of at most 2
    frames is segmentation flicker and ignored there).
    """
    frames = list(range(start, start + length))
    where: dict[int, dict[int, tuple[float, float, float, int]]] = {}  # track -> frame -> stats
    for f in frames:
        for b, s in stats[f].items():
            if s[3] >= min_area and assignment[f, b] >= 0:
                where.setdefault(int(assignment[f, b]), {})[f] = s
    full, noun = [], {}
    for t in sorted(t for t, seen in where.items() if len(seen) == length):
        wide = [where[t][f][4] >= wide_ratio * where[t][f][5] for f in frames]
        areas = [where[t][f][3] for f in frames]
        if max(areas) > max_area_ratio * min(areas):
            continue  # someone joined or left the blob mid-clip: not one referent
        if counts[t] == 1 and not any(wide):
            noun[t] = "person"
        elif counts[t] > 1 or all(wide):
            noun[t] = "group"
        else:
            continue  # a single track that is two people wide in some frames: a merge the tracker missed
        full.append(t)
    partial = [t for t in where if t not in full]
    if len(full) < 2 and not (full and partial):
        return []
    out: list[tuple[str, str, list[int]]] = []

    def beats(t: int, key: int, sign: float) -> bool:  # against every blob of the label map, fragments included
        return all(
            sign * (where[t][f][key] - other[key]) > margin
            for f in frames
            for b, other in stats[f].items()
            if assignment[f, b] != t
        )

    for kind, key, sign in (("leftmost", 0, -1.0), ("rightmost", 0, 1.0), ("nearest", 2, 1.0), ("farthest", 2, -1.0)):
        for t in full:
            if beats(t, key, sign):
                out.append((kind, _phrase(kind, noun[t], start + t), [t]))
    # the partial tracks must be known well enough not to share a motion (thresholds scaled to their span)
    others: list[str] = []
    for t in partial:
        seen = [where[t][f] for f in frames if f in where[t]]
        if len(seen) < 3:  # judge it over its whole track; a blob seen in at most 2 frames is a flicker
            rows, cols = np.nonzero(assignment == t)
            seen = [stats[f][b] for f, b in zip(rows.tolist(), cols.tolist())]
            if len(seen) < 3:
                continue
        others.append(_motion_kind(seen, min_motion * (len(seen) - 1) / (length - 1)) or "between")
        if counts[t] > 1 or any(p[4] >= wide_ratio * p[5] for p in seen):
            others.append("group")
    motion: dict[str, list[int]] = {}
    for t in full:
        kind = _motion_kind([where[t][f] for f in frames], min_motion)
        if kind is not None and noun[t] == "person":
            motion.setdefault(kind, []).append(t)
        elif kind is not None:
            others.append(kind)  # a group moving so: "the person walking to the left" would not say which
    for kind, members in sorted(motion.items()):
        if kind in others:
            continue
        text = _phrase(kind, "person" if len(members) == 1 else "people", start + members[0])
        out.append((kind, text, members))
    groups = [t for t in full if noun[t] == "group"]
    if len(groups) == 1 and "group" not in others:
        count = counts[groups[0]]
        text = (
            "the two people walking together"
            if count == 2
            else "the people walking together"
            if count == 1
            else f"the group of {_NUMBER_WORDS.get(count, 'several')} people"
        )
        out.append(("group", text, groups))
    if not partial and len(full) >= 2:
        path = {
            t: sum(
                float(np.hypot(where[t][f + 1][0] - where[t][f][0], where[t][f + 1][1] - where[t][f][1]))
                for f in frames[:-1]
            )
            for t in full
        }
        ranked = sorted(full, key=lambda t: -path[t])
        if path[ranked[0]] >= min_motion and path[ranked[0]] >= 1.5 * path[ranked[1]]:
            out.append(("fastest", _phrase("fastest", noun[ranked[0]], start), [ranked[0]]))
    return out


# ------------------------------------------------------------------------------------------------ the set
def build_vtest_referring(
    path: str | os.PathLike = VTEST_PATH,
    *,
    frame_step: int = 3,
    num_frames: int = 8,
    clip_stride: int = 2,
    downscale: int = 2,
    min_area: int = 150,
) -> dict[str, Any]:
    """Frames, labels, tracks and clips of the referring set (cached): {"data": vtest_frames_and_masks(...),
    "assignment", "counts", "clips": [(start position, [(kind, text, [track ids])])]}."""
    data = vtest_frames_and_masks(path, max_frames=10**6, frame_step=frame_step, downscale=downscale)
    key = hashlib.sha1(
        repr(
            (_VERSION, str(path), Path(path).stat().st_size, frame_step, num_frames, clip_stride, downscale, min_area)
        ).encode()
    ).hexdigest()[:12]
    cache = _cache_dir() / f"vtest_referring_{key}.npz"
    if cache.is_file():
        with np.load(cache) as stored:
            meta = json.loads(str(stored["meta"]))
            return {
                "data": data,
                "assignment": stored["assignment"],
                "counts": {int(k): v for k, v in meta["counts"].items()},
                "clips": meta["clips"],
            }
    labels = data["labels"]
    assignment, counts = track_blobs(labels, min_area=min_area)
    stats = _blob_stats(labels)
    clips = []
    for start in range(0, len(labels) - num_frames + 1, clip_stride):
        expressions = clip_expressions(stats, assignment, counts, start, num_frames, min_area=min_area)
        if expressions:
            clips.append((start, expressions))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, assignment=assignment, meta=np.str_(json.dumps({"counts": counts, "clips": clips})))
    os.replace(tmp, cache)
    return {"data": data, "assignment": assignment, "counts": counts, "clips": clips}


class VtestReferringSource:
    """One example per (clip, expression) of the vtest referring set (module docstring)."""

    def __init__(self, built: dict[str, Any], clips: list, num_frames: int, size: int | None):
        self.frames, self.labels = built["data"]["frames"], built["data"]["labels"]
        self.frame_numbers, self.assignment = built["data"]["index"], built["assignment"]
        self.num_frames, self.size = num_frames, size
        self.examples = [
            (start, k, kind, text, targets)
            for start, expressions in clips
            for k, (kind, text, targets) in enumerate(expressions)
        ]

    def __len__(self) -> int:
        return len(self.examples)

    def blob_labels(self, index: int) -> np.ndarray:
        """The clip's blob label maps (T, H, W) int32 (0 = background), for checking the expressions."""
        start = self.examples[_check_index(index, len(self))][0]
        return self.labels[start : start + self.num_frames]

    def target_blobs(self, index: int) -> list[list[int]]:
        """Per frame of the clip, the blob labels the expression refers to."""
        start, _, _, _, targets = self.examples[_check_index(index, len(self))]
        return [
            [int(b) for b in np.flatnonzero(np.isin(self.assignment[f], targets))]
            for f in range(start, start + self.num_frames)
        ]

    def __getitem__(self, index: int) -> dict[str, Any]:
        start, k, kind, text, _ = self.examples[_check_index(index, len(self))]
        labels = self.blob_labels(index)
        masks = np.stack([np.isin(frame, blobs) for frame, blobs in zip(labels, self.target_blobs(index))])
        numbers = self.frame_numbers[start : start + self.num_frames].astype(np.int32)
        example = {
            "frames": self.frames[start : start + self.num_frames],
            "masks": masks.astype(np.uint8),
            "object_present": masks.any(axis=(1, 2)),
            "expression": np.str_(text),
            "kind": np.str_(kind),
            "video_id": np.str_("vtest"),
            "exp_id": np.str_(f"{start}:{k}"),
            "frame_ids": numbers,
            "frame_names": np.array([f"{n:05d}" for n in numbers]),
        }
        if self.size is not None:
            example.update(resize_and_pad(example["frames"], example["masks"], self.size))
        return example

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """Example `index` (clips are fixed; nothing is drawn)."""
        return self[index]

    def __repr__(self) -> str:
        return (
            f"VtestReferringSource(examples={len(self)}, T={self.num_frames}, frames={self.frames.shape[1:3]}, "
            f"size={self.size})"
        )


def vtest_referring(
    split: str | None = "train",
    *,
    num_frames: int = 8,
    frame_step: int = 3,
    clip_stride: int = 2,
    eval_fraction: float = 0.2,
    size: int | None = None,
    path: str | os.PathLike = VTEST_PATH,
    downscale: int = 2,
) -> VtestReferringSource:
    """The embedded referring set; split "train" (earlier frames), "eval" / "test" (the last `eval_fraction`), "all".

    size: resize + pad (None keeps 288 x 384: every clip has that size, so batches stack).
    """
    built = build_vtest_referring(
        path, frame_step=frame_step, num_frames=num_frames, clip_stride=clip_stride, downscale=downscale
    )
    count = len(built["data"]["frames"])
    cut = count - max(num_frames, round(count * eval_fraction))
    if split in (None, "all"):
        clips = built["clips"]
    elif split == "train":
        clips = [c for c in built["clips"] if c[0] + num_frames <= cut]
    elif split in ("eval", "test", "validation", "valid"):
        clips = [c for c in built["clips"] if c[0] >= cut]
    else:
        raise ValueError(f"vtest_referring split must be train, eval or all; got {split!r}")
    return VtestReferringSource(built, clips, num_frames, size)


def register() -> None:
    """Register the source "vtest_referring" with `zoo.data` (idempotent)."""
    from zoo.data.registry import register_source

    register_source("vtest_referring", vtest_referring, overwrite=True)


register()
