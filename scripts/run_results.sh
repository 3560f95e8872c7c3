#!/usr/bin/env bash
# Reproduce README's routing tables: every suite x setting below, 3 seeds, all scenarios.
# Usage: scripts/run_results.sh [suite ...]   (default: routerbench llmrouter routerdc)
# Writes runs/<suite>-<setting>.json and .png, then runs/tables.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUTERS="${ROUTERS:-cheapest,knn,mlp,mf,metric-router,trouter,trouter+}"
SUITES=("${@:-routerbench llmrouter routerdc}")
mkdir -p runs
for suite in ${SUITES[@]}; do
  for setting in in-domain cold-start; do
    out="runs/${suite}-${setting}"
    [ -s "${out}.json" ] && { echo "skip ${out} (exists)"; continue; }
    trouter eval --suite "$suite" --setting "$setting" --routers "$ROUTERS" \
      --scenario all --seeds 3 --json "${out}.json" --plot "${out}.png" --no-progress
  done
done
python scripts/results_tables.py runs/*-in-domain.json runs/*-cold-start.json > runs/tables.md
echo "tables in runs/tables.md"
