#!/usr/bin/env bash
# Create .venv with everything tagger needs (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned to the release this project is tested with
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
# the test extra: pytest and what the tests drive, jsonschema, and mypy (the type check of .ci/run)
.venv/bin/python -m pip install -q -e '.[test]'
bash scripts/system_deps.sh
echo "set-up done: $(.venv/bin/python -c 'import torch, open_clip, faiss, duckdb, ray; print("torch", torch.__version__, "open_clip", open_clip.__version__, "faiss", faiss.__version__, "duckdb", duckdb.__version__, "ray", ray.__version__)')"
