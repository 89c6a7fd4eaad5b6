"""Under CI=true a skipped test is a failure (tests/conftest.py): check it on a throwaway suite in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

SUITE = '''
import pytest

def test_skips():
    pytest.skip("reference package missing")

@pytest.mark.skipif(True, reason="marker")
def test_marked():
    pass

def test_runs():
    pass
'''


def _run(tmp_path, ci: bool) -> subprocess.CompletedProcess:
    shutil.copy(os.path.join(os.path.dirname(__file__), "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_suite.py").write_text(SUITE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_skips_fail_under_ci_and_skip_elsewhere(tmp_path):
    local = _run(tmp_path, ci=False)
    assert local.returncode == 0 and "1 passed, 2 skipped" in local.stdout, local.stdout
    ci = _run(tmp_path, ci=True)
    assert ci.returncode != 0, ci.stdout
    summary = ci.stdout.strip().splitlines()[-1]
    assert "skipped under CI" in ci.stdout and "1 failed, 1 passed" in summary and "skipped" not in summary, ci.stdout
