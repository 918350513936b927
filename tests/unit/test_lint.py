"""The code passes the project's ruff rules (pyproject's [tool.ruff]: pyflakes, pycodestyle, import
sorting, bugbear, pyupgrade), so the habit is kept by the test suite and not by memory."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    if shutil.which("ruff") is None and subprocess.run([sys.executable, "-m", "ruff", "--version"],
                                                       capture_output=True).returncode != 0:
        pytest.skip("ruff is not installed (it is in the 'test' extra)")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "bench", "scripts"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
