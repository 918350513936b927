#!/usr/bin/env bash
# Set up a second virtual environment (.venv-vllm) with vLLM and collapselab, on a Linux machine
# with an NVIDIA GPU (docs/vllm.md says how a run uses it). Safe to run again.
#
# Why a separate environment: vLLM pins its own torch exactly (0.33.0: torch==2.14.0, a CUDA
# build) and caps transformers, while collapselab's `models` extra pins the torch its test suite
# runs on (2.13.0, the CPU build in .venv). No environment holds both pins, so here vLLM chooses
# torch and transformers, and collapselab goes in without its torch pin:
#   1. vllm alone, with collapselab's other requirements as constraints (not torch or
#      transformers): packages both need (openai, huggingface-hub, numpy, ...) land in versions
#      both accept, or pip stops here naming the conflict;
#   2. a snapshot of what that installed (pip list --format=freeze);
#   3. collapselab's requirements (core + COLLAPSELAB_EXTRAS, without torch and transformers) with
#      the snapshot as constraints: pip may add packages but cannot change one vLLM installed;
#   4. collapselab itself, editable, with --no-deps: its own metadata (the torch pin) is never resolved;
#   5. checks: pip check, the snapshot unchanged, vllm/torch import, collapselab's vLLM backend and
#      CLI import, and a note for each requirement whose version (vLLM's choice) is outside
#      collapselab's range.
#
#   bash scripts/setup-vllm.sh              # needs PyPI; downloads several GB (CUDA torch, vLLM)
#   bash scripts/setup-vllm.sh --dry-run    # print the commands, run nothing
#
# Environment: VLLM_VERSION (default: the pin of pyproject's `vllm` extra), VENV (.venv-vllm),
# PYTHON (the interpreter that creates the environment, python3; 3.11+), COLLAPSELAB_EXTRAS
# (collapselab's extras to install, default: all a run needs, so .venv-vllm/bin/collapselab runs
# whole experiments; `models` is enough for engines started through run.vllm.python).
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-vllm.sh: unknown argument $arg (use --dry-run or --help)" >&2; exit 2 ;;
  esac
done

PIN=$(sed -n 's/^vllm = \["vllm==\([^"]*\)"\]$/\1/p' pyproject.toml)
VLLM_VERSION=${VLLM_VERSION:-$PIN}
if [ -z "$VLLM_VERSION" ]; then
  echo "setup-vllm.sh: no vllm pin found in pyproject.toml; set VLLM_VERSION" >&2
  exit 1
fi
VENV=${VENV:-.venv-vllm}
PY=${PYTHON:-python3}
EXTRAS=${COLLAPSELAB_EXTRAS:-models,data,embeddings,metrics,report,api,ray}
# What vLLM chooses: collapselab's pins of these are left out (the report in step 5 names them).
VLLM_CHOOSES=torch,transformers
VPY=$VENV/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Run a command, or with --dry-run only print it: one line, "+ " first, each word that needs it in
# single quotes (so the line can be pasted into a shell).
PLAIN='^[A-Za-z0-9_./=,:@%+-]+$'
word() {
  if [[ $1 =~ $PLAIN ]]; then printf ' %s' "$1"; else printf " '%s'" "${1//\'/\'\\\'\'}"; fi
}
show() {
  printf '+'
  local w
  for w in "$@"; do word "$w"; done
}
run() {
  if [ "$DRY" = 1 ]; then show "$@"; echo; else "$@"; fi
}
# The same with standard output written to the file named first.
run_to() {
  local out=$1
  shift
  if [ "$DRY" = 1 ]; then show "$@"; printf ' >'; word "$out"; echo; else "$@" >"$out"; fi
}
fail() {
  echo "setup-vllm.sh: $*" >&2
  exit 1
}

if [ ! -x "$VPY" ]; then
  run "$PY" -m venv "$VENV"
fi
# a new pip: vLLM's dependencies include wheels with recent metadata
run "$VPY" -m pip install -q --upgrade pip

# 1. vLLM, resolved together with collapselab's ranges for everything but torch and transformers
run_to "$VENV/collapselab-constraints.txt" \
  "$VPY" scripts/vllm_env.py requirements --extras "$EXTRAS" --exclude "$VLLM_CHOOSES" --constraints
run "$VPY" -m pip install -q "vllm==$VLLM_VERSION" -c "$VENV/collapselab-constraints.txt" \
  || fail "vllm==$VLLM_VERSION cannot be installed within collapselab's version ranges (pip's message above" \
          "names the package); choose another VLLM_VERSION or widen that range in pyproject.toml"

# 2. what vLLM installed, pinned exactly (name==version; editable installs left out)
run_to "$VENV/vllm-freeze.txt" "$VPY" -m pip list --format=freeze --exclude-editable

# 3. collapselab's other requirements; the snapshot as constraints keeps every vLLM package as it is
run_to "$VENV/collapselab-requirements.txt" \
  "$VPY" scripts/vllm_env.py requirements --extras "$EXTRAS" --exclude "$VLLM_CHOOSES"
run "$VPY" -m pip install -q -r "$VENV/collapselab-requirements.txt" -c "$VENV/vllm-freeze.txt" \
  || fail "a requirement of collapselab's extras ($EXTRAS) needs a version of a package vLLM installed" \
          "(pip's message above names both); leave that extra out with COLLAPSELAB_EXTRAS"

# 4. collapselab itself (editable: this checkout, as in .venv); --no-deps: nothing is resolved
run "$VPY" -m pip install -q --no-deps -e .

# 5. checks
run "$VPY" -m pip check
run_to "$VENV/freeze-after.txt" "$VPY" -m pip list --format=freeze --exclude-editable
run "$VPY" scripts/vllm_env.py unchanged "$VENV/vllm-freeze.txt" "$VENV/freeze-after.txt"
run "$VPY" -c 'import torch, vllm; print(f"vllm {vllm.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda})")'
run "$VPY" -c 'import collapselab.models.vllm_backend'
run_to /dev/null "$VENV/bin/collapselab" --help
run "$VPY" scripts/vllm_env.py report --extras "$EXTRAS"
if [ "$DRY" = 1 ]; then
  exit 0
fi
echo "the vLLM environment is set up in $VENV: set run.vllm.python: $(cd "$VENV" && pwd)/bin/python (docs/vllm.md)"
