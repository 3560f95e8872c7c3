#!/usr/bin/env bash
# The replay runs behind docs/online.md and results/online/, bounded for a shared 2-core machine:
# three seeds (stream orders); every routerbench task; two llmrouter tasks (gsm8k, mmlu); one
# routerdc task (MATH_prealgebra, out-of-distribution); the local pool's real questions.
#   bash scripts/online_runs.sh [all|full|rerun|weights|changes]
# full: every router (about an hour); rerun: only the online variants, merged into every
# record (the fixed routers and the peers do not depend on the online router);
# weights: performance-first and cost-first on routerbench, cost-first on the local pool;
# changes: drift and a new model.
# Then scripts/online_table.py renders results/online/table.md from the records.
set -euo pipefail
export TROUTER_DATA_DIR="${TROUTER_DATA_DIR:-../shared/data}"
OUT=results/online
PART="${1:-all}"
ONLINE=online,online-base,online-random,online-nobase,online-explore
mkdir -p "$OUT"
run() { .venv/bin/trouter eval --setting online --seeds 3 --base auto --no-progress "$@"; }
rerun() {  # rerun FILE ARGS...: the online variants of FILE's streams, merged into it
    local file=$1
    shift
    run "$@" --routers "${RERUN_ROUTERS:-$ONLINE}" --json /tmp/online-rerun.json
    .venv/bin/python scripts/online_merge.py "$file" /tmp/online-rerun.json
}
LOCAL=(--train-file results/local-pool/synthetic.jsonl --test-file results/local-pool/real.jsonl)
# one feedback regime: a score for 20% of served queries, 10% of scores wrong, 50 queries late
NOISY=(--suite routerbench --tasks mbpp,winogrande --label-budget 25/500 --feedback-rate 0.2
       --feedback-noise 0.1 --feedback-delay 50)
if [ "$PART" = all ] || [ "$PART" = full ]; then
    run --suite routerbench --label-budget 0,25/500,100 \
        --json "$OUT/routerbench.json" --plot "$OUT/routerbench.png"
    run --suite llmrouter --tasks gsm8k,mmlu --label-budget 0,25/500,100 \
        --json "$OUT/llmrouter.json" --plot "$OUT/llmrouter.png"
    run --suite routerdc --tasks MATH_prealgebra --label-budget 0,25/500,100 \
        --json "$OUT/routerdc.json" --plot "$OUT/routerdc.png"
    run "${LOCAL[@]}" --label-budget 0,25/500 --json "$OUT/local-pool.json"
    run "${NOISY[@]}" --routers random,skyline,online,online-random,online-explore,eps-greedy,linucb \
        --json "$OUT/routerbench-noisy.json"
fi
if [ "$PART" = rerun ]; then
    rerun "$OUT/routerbench.json" --suite routerbench --label-budget 0,25/500,100
    rerun "$OUT/llmrouter.json" --suite llmrouter --tasks gsm8k,mmlu --label-budget 0,25/500,100
    rerun "$OUT/routerdc.json" --suite routerdc --tasks MATH_prealgebra --label-budget 0,25/500,100
    rerun "$OUT/local-pool.json" "${LOCAL[@]}" --label-budget 0,25/500
    rerun "$OUT/routerbench-noisy.json" "${NOISY[@]}"
    for weights in performance-first cost-first; do
        rerun "$OUT/routerbench-$weights.json" --suite routerbench --scenario "$weights" \
            --label-budget 0,25/500,100
    done
    rerun "$OUT/local-pool-cost-first.json" "${LOCAL[@]}" --scenario cost-first \
        --label-budget 0,25/500
    for change in score-drop@400 price-drop@400 new-model@300; do
        bound=()
        [ "${change%@*}" = new-model ] && bound=(--change-models 5)
        RERUN_ROUTERS=online,online-base rerun "$OUT/routerbench-${change%@*}.json" \
            --suite routerbench --label-budget 25per1000 --change "$change" "${bound[@]}" \
            --param online.half_life=500
    done
fi
if [ "$PART" = all ] || [ "$PART" = weights ]; then
    for weights in performance-first cost-first; do
        run --suite routerbench --scenario "$weights" --label-budget 0,25/500,100 \
            --routers random,skyline,"$ONLINE",linucb,thompson,eps-greedy \
            --json "$OUT/routerbench-$weights.json"
    done
    run "${LOCAL[@]}" --scenario cost-first --label-budget 0,25/500 \
        --routers random,skyline,"$ONLINE",linucb,thompson,eps-greedy \
        --json "$OUT/local-pool-cost-first.json"
fi
if [ "$PART" = all ] || [ "$PART" = changes ]; then
    # a change at query T; labels at a rate (25 per 1,000 queries, accruing) so that some
    # remain after T; old evidence discounted with a half-life of 500 queries (not tuned)
    for change in score-drop@400 price-drop@400 new-model@300; do
        bound=()  # new-model runs one model at a time: the first 5 by name
        [ "${change%@*}" = new-model ] && bound=(--change-models 5)
        run --suite routerbench --label-budget 25per1000 --change "$change" "${bound[@]}" \
            --param online.half_life=500 \
            --routers random,skyline,online,online-base,linucb,thompson,eps-greedy \
            --json "$OUT/routerbench-${change%@*}.json"
    done
fi
.venv/bin/python scripts/online_table.py "$OUT"/*.json --out "$OUT/table.md"
