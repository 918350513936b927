#!/usr/bin/env bash
# Set everything up, then run the offline demo experiment (configs/demo.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/collapselab run configs/demo.yaml "$@"
