"""Video object segmentation metrics with the definitions of the DAVIS 2017 evaluator (davis2017-evaluation), which
Ref-DAVIS17, Ref-YouTube-VOS and MeViS scoring use.

- J, region similarity: |S ∩ G| / |S ∪ G| over non-void pixels; 1 when both masks are empty.
- F, boundary F-measure: the masks' one-pixel boundary maps (offset half a pixel towards the origin, Martin et al.'s
  `seg2bmap`) are matched within a tolerance of ceil(0.008 x the image diagonal) pixels (a disk, the evaluator's
  `bound_th`); precision = matched predicted boundary / predicted boundary, recall = matched true boundary / true
  boundary, F = 2PR / (P + R). Empty boundaries: both empty -> P = R = 1; only the prediction empty -> P = 1, R = 0;
  only the truth empty -> P = 0, R = 1; P + R = 0 -> F = 0.
- Per sequence (and object): the mean over frames (`sequence_statistics` also gives the recall, the fraction of
  frames above 0.5, and the decay, first quarter minus last quarter); J&F = (J mean + F mean) / 2; a benchmark's J&F
  is the mean of its sequences' (objects', expressions') values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

BOUND_TH = 0.008


def _masks(prediction: np.ndarray, truth: np.ndarray, void: np.ndarray | None) -> tuple[np.ndarray, ...]:
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} masks differ in shape")
    if void is None:
        void = np.zeros(truth.shape, bool)
    else:
        void = np.asarray(void).astype(bool)
        if void.shape != truth.shape:
            raise ValueError(f"void mask {void.shape} does not match the masks {truth.shape}")
    return prediction.astype(bool), truth.astype(bool), void


def region_j(prediction: np.ndarray, truth: np.ndarray, void: np.ndarray | None = None) -> float | np.ndarray:
    """J of one mask pair (H, W) -> float, or of frames (..., H, W) -> (...) (the evaluator's `db_eval_iou`)."""
    prediction, truth, void = _masks(prediction, truth, void)
    valid = ~void
    inter = np.sum(prediction & truth & valid, axis=(-2, -1))
    union = np.sum((prediction | truth) & valid, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    j = np.where(np.isclose(union, 0), 1.0, j)
    return float(j) if j.ndim == 0 else j


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """The one-pixel boundary of a binary mask (H, W) -> bool (H, W): a pixel differs from its east, south or
    south-east neighbour (outside the image counts as background for the last row / column, whose own rule
    compares only along the edge), as the evaluator's `_seg2bmap` at full size."""
    seg = np.asarray(mask).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"boundary_map takes one (H, W) mask, got shape {seg.shape}")
    east, south, south_east = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def _disk(radius: float) -> np.ndarray:
    """skimage.morphology.disk(radius): the integer offsets within `radius` (inclusive) of the centre."""
    r = int(radius)
    offsets = np.arange(-r, r + 1)
    x, y = np.meshgrid(offsets, offsets)
    return (x * x + y * y) <= radius * radius


def _dilate(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, structure=structure) if mask.any() else mask.copy()


def tolerance_pixels(shape: Sequence[int], bound_th: float = BOUND_TH) -> float:
    """The matching distance in pixels: `bound_th` itself when >= 1, else ceil(bound_th x |(H, W)|)."""
    return float(bound_th) if bound_th >= 1 else float(math.ceil(bound_th * math.hypot(*shape[-2:])))


def boundary_f(prediction: np.ndarray, truth: np.ndarray, void: np.ndarray | None = None,
               bound_th: float = BOUND_TH) -> float | np.ndarray:
    """F of one mask pair (H, W) -> float, or of frames (T, H, W) -> (T,) (the evaluator's `db_eval_boundary`)."""
    prediction, truth, void = _masks(prediction, truth, void)
    if prediction.ndim == 3:
        return np.asarray([boundary_f(p, t, v, bound_th) for p, t, v in zip(prediction, truth, void, strict=True)])
    if prediction.ndim != 2:
        raise ValueError(f"boundary_f takes (H, W) or (T, H, W) masks, got shape {prediction.shape}")
    valid = ~void
    fg_boundary = boundary_map(prediction & valid)
    gt_boundary = boundary_map(truth & valid)
    disk = _disk(tolerance_pixels(prediction.shape, bound_th))
    fg_matched = fg_boundary & _dilate(gt_boundary, disk)
    gt_matched = gt_boundary & _dilate(fg_boundary, disk)
    n_fg, n_gt = int(fg_boundary.sum()), int(gt_boundary.sum())
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision, recall = fg_matched.sum() / n_fg, gt_matched.sum() / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def sequence_statistics(per_frame: Sequence[float] | np.ndarray) -> dict[str, float]:
    """{"mean", "recall", "decay"} of per-frame values (the evaluator's `db_statistics`: NaNs ignored; recall = the
    fraction above 0.5; decay = mean of the first of 4 equal bins minus mean of the last)."""
    values = np.asarray(per_frame, np.float64)
    if values.size == 0:
        raise ValueError("sequence_statistics needs at least one frame")
    with np.errstate(invalid="ignore"):
        mean = float(np.nanmean(values))
        recall = float(np.nanmean(values > 0.5))
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
    bins = [values[ids[i]:ids[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return {"mean": mean, "recall": recall, "decay": decay}


def j_and_f(sequences: Mapping[str, tuple[np.ndarray, np.ndarray]] | Iterable[tuple[str, np.ndarray, np.ndarray]],
            *, bound_th: float = BOUND_TH, exclude_first_last: bool = False) -> dict:
    """Score predicted masks against ground truth, sequence by sequence.

    `sequences`: {name: (predicted (T, H, W), truth (T, H, W))} (a name per video-object or video-expression), or
    (name, predicted, truth) triples. `exclude_first_last`: drop the first and last frame of each sequence (the
    semi-supervised DAVIS protocol; the referring benchmarks keep all frames).

    Returns {"J&F", "J", "F"} (means over sequences) and "per_sequence": {name: {"J", "F", "J&F", "J_stats",
    "F_stats"}}.
    """
    items = sequences.items() if isinstance(sequences, Mapping) else ((n, p, t) for n, p, t in sequences)
    per_sequence = {}
    for item in items:
        name, (prediction, truth) = (item[0], item[1]) if isinstance(sequences, Mapping) else (item[0], item[1:])
        prediction, truth = np.asarray(prediction), np.asarray(truth)
        if prediction.ndim != 3:
            raise ValueError(f"sequence {name!r}: masks must be (T, H, W), got {prediction.shape}")
        if exclude_first_last:
            if prediction.shape[0] < 3:
                raise ValueError(f"sequence {name!r}: exclude_first_last needs at least 3 frames")
            prediction, truth = prediction[1:-1], truth[1:-1]
        j = np.atleast_1d(region_j(prediction, truth))
        f = np.atleast_1d(boundary_f(prediction, truth, bound_th=bound_th))
        j_stats, f_stats = sequence_statistics(j), sequence_statistics(f)
        per_sequence[name] = {"J": j_stats["mean"], "F": f_stats["mean"],
                              "J&F": (j_stats["mean"] + f_stats["mean"]) / 2, "J_stats": j_stats, "F_stats": f_stats}
    if not per_sequence:
        raise ValueError("j_and_f needs at least one sequence")
    j_mean = float(np.mean([s["J"] for s in per_sequence.values()]))
    f_mean = float(np.mean([s["F"] for s in per_sequence.values()]))
    return {"J&F": (j_mean + f_mean) / 2, "J": j_mean, "F": f_mean, "per_sequence": per_sequence}
