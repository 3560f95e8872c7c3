#!/usr/bin/env bash
# Re-run the evaluations behind docs/results.md: in-domain and few-shot (K=0 is cold start)
# for every suite, 3 seeds, all scenarios; records in results/<suite>-<setting>.json.
# Usage: scripts/run_results.sh [suite ...]   (default: routerbench llmrouter routerdc)
# An existing non-empty record file is kept (delete it to re-run that table).
# Then: python scripts/docs_tables.py   (re-renders every table of README and docs/)
set -euo pipefail
cd "$(dirname "$0")/.."
TROUTER="${TROUTER:-trouter}"
OUT="${OUT:-results}"
SEEDS="${SEEDS:-3}"
# In-domain: every router. Few-shot: the fast routers (a fit per held-out task and K).
IN_DOMAIN="${IN_DOMAIN:-knn,ridge,cluster,mlp,mf,metric-router,trouter,trouter+,auto}"
FEW_SHOT="${FEW_SHOT:-knn,ridge,cluster,metric-router,auto}"
SHOTS="${SHOTS:-0,10,25,50,100,all}"
SUITES=("${@:-routerbench llmrouter routerdc}")
mkdir -p "$OUT"

run() {  # run NAME eval-arguments...
  local out="$OUT/$1"
  shift
  if [ -s "${out}.json" ]; then echo "skip ${out} (exists)"; return; fi
  nice "$TROUTER" eval "$@" --scenario all --seeds "$SEEDS" --json "${out}.json" --no-progress
}

for suite in ${SUITES[@]}; do
  run "${suite}-in-domain" --suite "$suite" --setting in-domain --routers "$IN_DOMAIN" \
    --plot "$OUT/${suite}-in-domain.png"
  run "${suite}-few-shot" --suite "$suite" --setting few-shot --shots "$SHOTS" \
    --routers "$FEW_SHOT" --curve "$OUT/${suite}-few-shot.png"
done
