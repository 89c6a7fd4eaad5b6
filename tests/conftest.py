"""Test set-up shared by the whole suite.

Eight fake CPU devices for the multi-device tests (they must fail, not skip, when devices are missing), and f32
matmuls at full precision for parity tests.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "float32")
