"""scripts/setup-vllm.sh, checked without a network or vLLM: its syntax, the commands --dry-run prints
(vLLM before collapselab, collapselab never able to replace vLLM's torch, the checks at the end,
VENV / VLLM_VERSION / PYTHON / COLLAPSELAB_EXTRAS honoured), that .venv-vllm is git-ignored, and
the logic of its Python half (scripts/vllm_env.py)."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "setup-vllm.sh"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _helper():
    spec = importlib.util.spec_from_file_location("vllm_env", ROOT / "scripts" / "vllm_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vllm_env = _helper()


def dry_run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in ("VENV", "VLLM_VERSION", "PYTHON", "COLLAPSELAB_EXTRAS")}
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], cwd=tmp_path, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def commands(tmp_path: Path, **env: str) -> list[str]:
    done = dry_run(tmp_path, **env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith("+ ") for line in lines), done.stdout
    return [line[2:] for line in lines]


def index(lines: list[str], *parts: str) -> int:
    found = [i for i, line in enumerate(lines) if all(p in line for p in parts)]
    assert len(found) == 1, (parts, lines)
    return found[0]


def test_bash_syntax():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_dry_run_installs_vllm_first_and_collapselab_without_torch(tmp_path):
    venv = tmp_path / "venv"
    lines = commands(tmp_path, VENV=str(venv), VLLM_VERSION="9.8.7", PYTHON="python3.99")
    py = f"{venv}/bin/python"
    assert lines[0] == f"python3.99 -m venv {venv}"
    assert all(line.startswith((py, "python3.99 ", f"{venv}/bin/collapselab ")) for line in lines), lines

    constraints = index(lines, "vllm_env.py requirements", "--constraints")
    vllm = index(lines, "pip install", "vllm==9.8.7")
    snapshot = index(lines, "pip list --format=freeze", "> " + f"{venv}/vllm-freeze.txt")
    reqs = index(lines, "vllm_env.py requirements", f"> {venv}/collapselab-requirements.txt")
    extras = index(lines, "pip install", f"-r {venv}/collapselab-requirements.txt")
    own = index(lines, "pip install", "-e .")
    assert constraints < vllm < snapshot < reqs < extras < own

    # vLLM is resolved with collapselab's ranges as constraints, never its torch or transformers pin
    assert f"-c {venv}/collapselab-constraints.txt" in lines[vllm]
    for i in (constraints, reqs):
        assert "--exclude torch,transformers" in lines[i]
    # collapselab's other requirements cannot change what vLLM installed; collapselab itself is not resolved
    assert f"-c {venv}/vllm-freeze.txt" in lines[extras]
    assert "--no-deps" in lines[own]
    assert not any("pip install" in line and "torch" in line for line in lines)
    assert not any("pip install" in line and ("collapselab[" in line or ".[" in line) for line in lines)

    # the checks come last
    checks = [index(lines, "-m pip check"), index(lines, "vllm_env.py unchanged", f"{venv}/vllm-freeze.txt"),
              index(lines, "import torch, vllm"), index(lines, "import collapselab.models.vllm_backend"),
              index(lines, "bin/collapselab --help"), index(lines, "vllm_env.py report")]
    assert own < min(checks)
    assert not venv.exists()  # a dry run creates nothing


def test_defaults_are_the_pyproject_pin_and_dot_venv_vllm(tmp_path):
    pin = next(r.split("==", 1)[1] for r in PYPROJECT["project"]["optional-dependencies"]["vllm"])
    lines = commands(tmp_path)
    assert any(f"vllm=={pin}" in line and "pip install" in line for line in lines)
    assert any(line.startswith("python3 -m venv .venv-vllm") for line in lines) \
        or (ROOT / ".venv-vllm" / "bin" / "python").exists()
    assert all(".venv-vllm/" in line for line in lines if "pip" in line)
    extras = "models,data,embeddings,metrics,report,api,ray"
    assert any(f"--extras {extras} " in line for line in lines)


def test_existing_environment_is_reused_and_extras_are_chosen(tmp_path):
    venv = tmp_path / "env"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    lines = commands(tmp_path, VENV=str(venv), COLLAPSELAB_EXTRAS="models")
    assert not any("-m venv" in line for line in lines)
    assert any("requirements --extras models --exclude" in line for line in lines)


def test_paths_with_spaces_are_quoted(tmp_path):
    lines = commands(tmp_path, VENV=str(tmp_path / "my env"))
    assert lines[0].endswith(f"'{tmp_path}/my env'")


def test_unknown_argument_is_refused(tmp_path):
    done = dry_run(tmp_path, "--bogus")
    assert done.returncode == 2 and "--bogus" in done.stderr


def test_venv_vllm_is_git_ignored():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in (".venv-vllm/", ".venv-vllm/bin/python"):
        done = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, timeout=30)
        assert done.returncode == 0, f"{path} is not git-ignored"


# -- scripts/vllm_env.py ---------------------------------------------------------------------------

def test_requirements_leave_out_what_vllm_chooses_and_expand_self_references():
    reqs = vllm_env.requirements(PYPROJECT, ["all"], {"torch", "Transformers"})
    names = [vllm_env.normalize(vllm_env.split_requirement(r)[0]) for r in reqs]
    assert "torch" not in names and "transformers" not in names
    assert {"pydantic", "peft", "openai", "ray", "pytest"} <= set(names)  # core + expanded extras
    assert not any(n == "collapselab" for n in names)
    assert len(names) == len(set(names))
    with pytest.raises(SystemExit, match="no extra"):
        vllm_env.requirements(PYPROJECT, ["nope"])


def test_constraints_have_no_extras():
    assert vllm_env.as_constraint("uvicorn[standard]>=0.30; python_version>'3'") == "uvicorn>=0.30; python_version>'3'"
    assert vllm_env.as_constraint("ray==2.60.0") == "ray==2.60.0"
    assert vllm_env.as_constraint("numpy") == "numpy"


def test_unchanged_detects_a_replaced_or_removed_package(tmp_path):
    before = vllm_env.read_freeze("torch==2.14.0\nTyping_Extensions==4.1\nvllm==0.33.0\n")
    assert vllm_env.changed(before, vllm_env.read_freeze("torch==2.14.0\ntyping-extensions==4.1\n"
                                                         "vllm==0.33.0\nray==2.60.0\n")) == []
    assert vllm_env.changed(before, vllm_env.read_freeze("torch==2.13.0\nvllm==0.33.0\ntyping-extensions==4.1")) \
        == ["torch: 2.14.0 -> 2.13.0"]
    (tmp_path / "a").write_text("torch==2.14.0\n")
    (tmp_path / "b").write_text("")
    assert vllm_env.main(["unchanged", str(tmp_path / "a"), str(tmp_path / "b")]) == 1


def test_report_notes_out_of_range_versions_and_fails_on_missing_ones():
    notes, errors = vllm_env.report(["torch==2.13.0", "transformers>=5.20,<6", "ray==2.60.0"],
                                    {"torch": "2.14.0", "transformers": "5.20.2"})
    assert notes == ["torch 2.14.0 is outside collapselab's range ==2.13.0 (kept: the vLLM environment's)"]
    assert errors == ["ray is not installed (collapselab asks for ray==2.60.0)"]
    assert vllm_env.report(["torch==2.13.0"], {"torch": "2.13.0+cpu"}) == ([], [])


def test_helper_runs_with_this_interpreter():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "vllm_env.py"), "requirements", "--extras",
                           "models", "--exclude", "torch,transformers", "--constraints"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "peft>=0.17" in done.stdout.splitlines() and "torch" not in done.stdout
