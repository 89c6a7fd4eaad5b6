"""Evaluation metrics shared by tasks and scripts (numpy, host side): `zoo.metrics.davis` (J, F, J&F of video object
segmentation, the DAVIS definitions) and `zoo.metrics.submission` (the Ref-YouTube-VOS / MeViS server zips)."""

from zoo.metrics.davis import boundary_f, boundary_map, j_and_f, region_j, sequence_statistics
from zoo.metrics.submission import SubmissionWriter, read_submission

__all__ = ["SubmissionWriter", "boundary_f", "boundary_map", "j_and_f", "read_submission", "region_j",
           "sequence_statistics"]
