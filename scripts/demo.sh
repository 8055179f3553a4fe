#!/usr/bin/env bash
# Set up, then run the whole pipeline on a generated toy-world corpus as Ray jobs on a local head,
# ending with SQL over the tags and their mAP against the toy ground truth.
#   bash scripts/demo.sh [N_IMAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
N=${1:-3000}
WS=${TAGGER_DEMO_WORKSPACE:-$PWD/demo-workspace}
export TAGGER_WORKSPACE=$WS RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
PY=$PWD/.venv/bin/python
RAY=$PWD/.venv/bin/ray
TAGGER=$PWD/.venv/bin/tagger
ADDR=http://127.0.0.1:8265

rm -rf "$WS"
$TAGGER init "$WS" >/dev/null  # a workspace is made in a new folder; the images may go inside it afterwards
echo "== generating $N toy-world images (+2 corrupt files) into $WS/images"
$PY -m tagger.toyworld.export "$WS/images" --n "$N" --bad-files

echo "== starting a local Ray head on 127.0.0.1"
$RAY start --head --node-ip-address 127.0.0.1 --dashboard-host 127.0.0.1 --disable-usage-stats >/dev/null
trap '$RAY stop --force >/dev/null 2>&1 || true' EXIT

submit() { $RAY job submit --address $ADDR --working-dir . -- "$PY" -m "$@"; }
# `ray start` returns before the job agent accepts jobs
for _ in $(seq 60); do $RAY job submit --address $ADDR -- true >/dev/null 2>&1 && break; sleep 2; done

echo "== labels"
$TAGGER labels add --toy -w "$WS"
echo "== encode (Ray job)"
submit jobs.encode --workspace "$WS" --source "$WS/images" --model "${TAGGER_DEMO_MODEL:-toy-rn}"
echo "== generate text (Ray job; offline generator unless OPENAI_BASE_URL/TAGGER_LLM_MODEL are set)"
submit jobs.generate_text --workspace "$WS"
echo "== train (Ray job)"
submit jobs.train --workspace "$WS"
echo "== tag (Ray job)"
submit jobs.tag --workspace "$WS"

echo "== SQL over the tags"
$TAGGER sql -w "$WS" "SELECT label, count(*) AS images FROM current_tags WHERE positive GROUP BY label ORDER BY images DESC LIMIT 8"
$TAGGER sql -w "$WS" "SELECT uri, score FROM current_tags WHERE label = 'star' ORDER BY score DESC LIMIT 5"
$TAGGER sql -w "$WS" "SELECT status, count(*) AS n, any_value(error) AS example_error FROM images GROUP BY status"
echo "== tags against the toy ground truth"
$PY -m tagger.evaluate.catalog_eval "$WS" "$WS/images-truth.json"
