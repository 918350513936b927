"""docs/extending.md is executable: its file blocks are written into a folder and each check block
runs in a fresh interpreter with that folder on the path (fresh, so the toy registrations never
leak into the other tests' registries)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
BLOCK = re.compile(r"<!-- (file: (?P<name>[\w./]+)|check) -->\n```\w+\n(?P<code>.*?)```", re.S)


def blocks() -> tuple[dict[str, str], list[str]]:
    files, checks = {}, []
    for m in BLOCK.finditer(DOC.read_text()):
        if m["name"]:
            files[m["name"]] = m["code"]
        else:
            checks.append(m["code"])
    return files, checks


def test_the_page_has_an_example_for_every_extension_point():
    files, checks = blocks()
    assert {"toy_metric.py", "toy_backend.py", "toy_judge/__init__.py", "toy_stage.py", "toy_plot.py"} <= set(files)
    assert len(checks) >= 5  # one check per extension point at least
    assert "JUDGE_SECTION" not in DOC.read_text() and "PLOT_SECTION" not in DOC.read_text()


@pytest.mark.parametrize("index", range(len(blocks()[1])))
def test_check_block_runs(tmp_path, index):
    files, checks = blocks()
    for name, code in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(code)
    script = tmp_path / f"check_{index}.py"
    script.write_text(checks[index])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"check block {index} of docs/extending.md failed:\n{done.stderr[-3000:]}"
