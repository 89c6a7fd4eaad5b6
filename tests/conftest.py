"""Test set-up shared by the whole suite.

Eight fake CPU devices for the multi-device tests (they must fail, not skip, when devices are missing), and f32
matmuls at full precision for parity tests.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "float32")


# Under CI (`.ci/run` exports CI=true) no test may skip: a missing reference package, data file or tool is a failure
# there, whatever form the skip takes (pytest.skip, importorskip, skipif markers).
def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (CI=true), which must run every test: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if _in_ci() and report.skipped:  # a module-level importorskip / skip
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"module skipped under CI (CI=true), which must run every test: {reason}"
