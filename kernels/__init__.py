"""Kernels of the zoo: attention and Gaussian rasterization, each with Pallas and XLA paths behind one dispatcher.

`kernels` imports neither `zoo` nor `models`: it stands alone.
"""

from kernels.attention import attention
from kernels.rasterize import RasterOutput, check_overflow, rasterize

__all__ = ["RasterOutput", "attention", "check_overflow", "rasterize"]
