#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.
# Modules that start a local Ray inside the test process run in an interpreter of their own, after the
# rest: a Ray started, stopped and started again in one long-lived process is not what a user runs.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit $?
PYTEST=(.venv/bin/python -m pytest -q -ra)
if [ $# -gt 0 ]; then exec "${PYTEST[@]}" "$@"; fi
OWN_RAY=(tests/test_raycluster.py tests/test_small_workspace.py tests/test_tag_decisions_run.py
         tests/test_run_bookkeeping.py tests/test_hierarchy.py tests/test_heads_run.py
         tests/test_scale_synthetic.py tests/test_search_shards.py)
"${PYTEST[@]}" "${OWN_RAY[@]/#/--ignore=}"; rc=$?
"${PYTEST[@]}" "${OWN_RAY[@]}"; rc2=$?
[ "$rc" -ne 0 ] && exit "$rc"
exit "$rc2"
