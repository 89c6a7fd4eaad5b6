"""J, F and J&F with the DAVIS 2017 evaluator's definitions, on hand-made masks whose values are known."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.metrics import boundary_f, boundary_map, j_and_f, region_j, sequence_statistics
from zoo.metrics.davis import tolerance_pixels


def square(size, top, left, side):
    mask = np.zeros((size, size), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_region_j_known_values_and_empty_masks():
    truth = square(10, 2, 2, 4)  # 16 pixels
    assert region_j(truth, truth) == 1.0
    assert region_j(square(10, 2, 4, 4), truth) == pytest.approx(8 / 24)  # overlap 4x2, union 16 + 16 - 8
    empty = np.zeros((10, 10), bool)
    assert region_j(empty, empty) == 1.0  # both empty: a perfect answer
    assert region_j(truth, empty) == 0.0 and region_j(empty, truth) == 0.0
    void = np.zeros((10, 10), bool)
    void[:, 4:] = True  # only columns 0-3 count: truth has 8 pixels there, the shifted square none
    assert region_j(square(10, 2, 4, 4), truth, void) == 0.0
    frames = np.stack([truth, empty])
    np.testing.assert_allclose(region_j(frames, np.stack([truth, truth])), [1.0, 0.0])


def test_boundary_map_of_a_square_has_4k_pixels():
    # seg2bmap marks the square's right column and bottom row inside and the column left of it and the row above it
    # outside (the half-pixel offset towards the origin): (2k - 1) + k + (k + 1) = 4k pixels.
    for side in (1, 3, 4):
        bmap = boundary_map(square(12, 4, 5, side))
        assert bmap.sum() == 4 * side
        assert bmap[3, 4] and bmap[4 + side - 1, 5 + side - 1] and not bmap[4 + side, 5 + side]


def test_boundary_f_known_values():
    truth = square(10, 2, 2, 4)
    assert tolerance_pixels((10, 10)) == 1.0  # ceil(0.008 * 14.14)
    assert boundary_f(truth, truth) == 1.0
    assert boundary_f(square(10, 3, 2, 4), truth) == 1.0  # a one-pixel shift is within the tolerance
    # Squares overlapping at one corner pixel: 5 of the 16 boundary pixels on each side lie within one pixel of the
    # other's boundary (around the shared corner), so P = R = 5 / 16 = F.
    assert boundary_f(square(10, 5, 5, 4), truth) == pytest.approx(5 / 16)
    # The truth plus a far copy: precision 16 / 32, recall 1 -> F = 2/3.
    far = np.zeros((40, 40), bool)
    far[2:6, 2:6] = True
    both = far.copy()
    both[30:34, 30:34] = True
    assert boundary_f(both, far) == pytest.approx(2 * 0.5 / 1.5)
    assert boundary_f(square(40, 30, 30, 4), far) == 0.0  # nothing matched: P = R = 0
    empty = np.zeros((10, 10), bool)
    assert boundary_f(empty, empty) == 1.0  # no boundary on either side: P = R = 1
    assert boundary_f(empty, truth) == 0.0  # P = 1, R = 0
    assert boundary_f(truth, empty) == 0.0  # P = 0, R = 1
    assert boundary_f(square(40, 30, 30, 4), far, bound_th=40) == 1.0  # bound_th >= 1 is in pixels


def test_one_pixel_shift_inside_a_larger_image_depends_on_the_tolerance():
    truth = square(200, 50, 50, 40)  # tolerance ceil(0.008 * 282.8) = 3 pixels
    assert tolerance_pixels(truth.shape) == 3.0
    assert boundary_f(square(200, 53, 50, 40), truth) == 1.0
    shifted = boundary_f(square(200, 54, 50, 40), truth)
    assert 0.0 < shifted < 1.0  # the top and bottom edges (4 px away) no longer match, the sides still do


def test_sequence_statistics_and_j_and_f():
    stats = sequence_statistics([1.0, 1.0, 0.0, 0.0])
    assert stats == {"mean": 0.5, "recall": 0.5, "decay": pytest.approx(1.0)}
    truth = np.stack([square(10, 2, 2, 4)] * 4)
    prediction = truth.copy()
    prediction[2:] = False  # the object lost in the last two frames
    result = j_and_f({"video_a/0": (prediction, truth), "video_b/0": (truth, truth)})
    a = result["per_sequence"]["video_a/0"]
    assert a["J"] == 0.5 and a["F"] == 0.5 and a["J&F"] == 0.5
    assert result["J"] == 0.75 and result["F"] == 0.75 and result["J&F"] == 0.75
    inner = j_and_f([("video_a/0", prediction, truth)], exclude_first_last=True)  # frames 1 and 2 only
    assert inner["J"] == 0.5
    with pytest.raises(ValueError, match="differ in shape"):
        region_j(truth[0], truth[0][:5])
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        j_and_f({"x": (truth[0], truth[0])})


@pytest.mark.parametrize(("benchmark", "prefix"), [("ref_youtube_vos", "Annotations/"), ("mevis", "")])
def test_submission_zip_layout_round_trip_and_no_partial_file_on_error(tmp_path, benchmark, prefix):
    import zipfile

    from zoo.metrics import SubmissionWriter, read_submission

    path = tmp_path / "Annotations.zip"
    masks = {("vid1", "0", "00000"): square(8, 1, 1, 3), ("vid1", "1", "00005"): np.zeros((8, 8), np.uint8),
             ("vid2", "0", "00000"): square(8, 2, 2, 4).astype(np.uint8) * 255}
    with SubmissionWriter(path, benchmark) as writer:
        for (video, exp_id, frame), mask in masks.items():
            writer.add(video, exp_id, frame, mask)
        with pytest.raises(ValueError, match="already written"):
            writer.add("vid1", "0", "00000", masks[("vid1", "0", "00000")])
        with pytest.raises(ValueError, match="one frame"):
            writer.add("vid3", "0", "00000", np.zeros((2, 8, 8)))
        with pytest.raises(ValueError, match="path separators"):
            writer.add("a/b", "0", "00000", masks[("vid1", "0", "00000")])
    names = sorted(zipfile.ZipFile(path).namelist())
    assert names == sorted(f"{prefix}{v}/{e}/{f}.png" for v, e, f in masks)
    read = {(v, e, f): m for v, e, f, m in read_submission(path, benchmark)}
    assert set(read) == set(masks)
    for key, mask in masks.items():
        np.testing.assert_array_equal(read[key], np.asarray(mask) > 0)
    with pytest.raises(RuntimeError, match="boom"), SubmissionWriter(path, benchmark) as writer:
        writer.add("vid9", "0", "00000", masks[("vid1", "0", "00000")])
        raise RuntimeError("boom")
    assert {v for v, _, _, _ in read_submission(path, benchmark)} == {"vid1", "vid2"}  # the good file is intact
    with pytest.raises(ValueError, match="unknown benchmark"):
        SubmissionWriter(path, "davis")
