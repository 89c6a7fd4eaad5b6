"""Evaluation metrics shared by tasks and scripts (numpy, host side): `zoo.metrics.davis` (J, F, J&F of video object
segmentation, the DAVIS definitions)."""

from zoo.metrics.davis import boundary_f, boundary_map, j_and_f, region_j, sequence_statistics

__all__ = ["boundary_f", "boundary_map", "j_and_f", "region_j", "sequence_statistics"]
