"""The gateway's command line run as a separate process, for the tests of what keeps `serve` from
starting (tests/test_process.py, tests/test_start_faults.py): its exit code and output once it
has ended, and the check that a refusal is one line, exit 1 and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_serve(config: Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    """`hwc-gateway serve` expected to refuse: its exit code and output once it has ended."""
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "gateway", "--config", str(config), "serve"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def one_line_refusal(result: subprocess.CompletedProcess[str], *names: str) -> str:
    """Exit 1, exactly one line on stderr naming each of `names`, no traceback anywhere."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output and "gateway.started" not in output, output
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    for name in names:
        assert name in result.stderr, result.stderr
    return result.stderr


def run_verb(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, check=False)
