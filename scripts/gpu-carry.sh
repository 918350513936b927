#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels that bench/gpu.py needs on the GPU machine
# and that machine lacks: pydantic and its parts (collapselab's config), nltk and its pure-Python
# dependencies (the text metrics), threadpoolctl (the executor), and a typing-extensions new
# enough for pydantic. cp312 manylinux x86_64 wheels, versions pinned to what .venv has, without
# dependencies (each one is named), into .gpu-wheels/ (git-ignored).
#
#   bash scripts/gpu-carry.sh            # then run bench/gpu.py with carry: [".gpu-wheels"]
#
# bench/gpu.py unpacks on the device only those wheels whose distribution the device lacks (and
# typing-extensions when the device's is older), into /tmp/gpu-site, and puts that on sys.path.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
DEST=${DEST:-.gpu-wheels}
PYVER=${PYVER:-3.12}  # the device's Python (another only to test the unpacking here)
ABI=cp${PYVER/./}
# distribution==version; the compiled ones (pydantic-core, regex) need the cp312 build
WHEELS=(
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
  threadpoolctl==3.8.0
  nltk==3.10.4
  regex==2026.11.19
  joblib==1.6.0
  cloudpickle==3.1.3
  defusedxml==0.7.1
  click==8.5.1
  tqdm==4.70.1
  filelock==4.3.2
)

rm -rf "$DEST"
mkdir -p "$DEST"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip download -q --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp --abi "$ABI" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$DEST" "${WHEELS[@]}"
count=$(ls "$DEST"/*.whl | wc -l)
if [ "$count" -ne "${#WHEELS[@]}" ]; then
  echo "expected ${#WHEELS[@]} wheels in $DEST, got $count" >&2
  exit 1
fi
du -sh "$DEST"
echo "$count wheels in $DEST: carry it to the device with bench/gpu.py (see its docstring)"
