#!/usr/bin/env bash
# The replay runs behind docs/online.md and results/online/ (one after the other, bounded:
# three seeds, a subset of tasks on the larger suites, routerdc's mmlu stream cut to 2,000 rows).
# Then scripts/online_table.py renders results/online/table.md from the records.
set -euo pipefail
export TROUTER_DATA_DIR="${TROUTER_DATA_DIR:-../shared/data}"
OUT=results/online
mkdir -p "$OUT"
run() { nice -n 10 .venv/bin/trouter eval --setting online --seeds 3 --base auto --no-progress "$@"; }
run --suite routerbench --label-budget 0,25/500,100 \
    --json "$OUT/routerbench.json" --plot "$OUT/routerbench.png"
run --suite llmrouter --tasks gsm8k,mbpp,mmlu --label-budget 0,25/500 \
    --json "$OUT/llmrouter.json" --plot "$OUT/llmrouter.png"
run --suite routerdc --tasks mmlu,MATH_prealgebra --max-stream 2000 --label-budget 0,25/500 \
    --json "$OUT/routerdc.json" --plot "$OUT/routerdc.png"
.venv/bin/python scripts/online_table.py "$OUT"/*.json --out "$OUT/table.md"
