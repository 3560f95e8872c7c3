#!/usr/bin/env bash
# The replay runs behind docs/online.md and results/online/, bounded for a shared 2-core machine:
# three seeds (stream orders); every routerbench task; two llmrouter tasks (gsm8k, mmlu); one
# routerdc task (MATH_prealgebra, out-of-distribution); the local pool's real questions.
# Then scripts/online_table.py renders results/online/table.md from the records.
set -euo pipefail
export TROUTER_DATA_DIR="${TROUTER_DATA_DIR:-../shared/data}"
OUT=results/online
mkdir -p "$OUT"
run() { .venv/bin/trouter eval --setting online --seeds 3 --base auto --no-progress "$@"; }
run --suite routerbench --label-budget 0,25/500,100 \
    --json "$OUT/routerbench.json" --plot "$OUT/routerbench.png"
run --suite llmrouter --tasks gsm8k,mmlu --label-budget 0,25/500,100 \
    --json "$OUT/llmrouter.json" --plot "$OUT/llmrouter.png"
run --suite routerdc --tasks MATH_prealgebra --label-budget 0,25/500,100 \
    --json "$OUT/routerdc.json" --plot "$OUT/routerdc.png"
run --train-file results/local-pool/synthetic.jsonl --test-file results/local-pool/real.jsonl \
    --label-budget 0,25/500 --json "$OUT/local-pool.json"
# one feedback regime: a score for 20% of served queries, 10% of scores wrong, 50 queries late
run --suite routerbench --tasks mbpp,winogrande --label-budget 25/500 --feedback-rate 0.2 \
    --feedback-noise 0.1 --feedback-delay 50 \
    --routers skyline,online,online-random,online-explore,eps-greedy,linucb \
    --json "$OUT/routerbench-noisy.json"
# The committed routerbench/llmrouter/routerdc records of online, online-base and
# online-random come from this faster rerun (3 min), merged into the records above; the
# local-pool and noisy-feedback records predate the best-single anchor (online there is
# what online-base is now):
#   for s in "routerbench" "llmrouter --tasks gsm8k,mmlu" "routerdc --tasks MATH_prealgebra"; do
#     run --suite $s --label-budget 0,25/500,100 --routers online,online-base,online-random \
#       --json /tmp/new.json && .venv/bin/python scripts/online_merge.py "$OUT/${s%% *}.json" /tmp/new.json
#   done
.venv/bin/python scripts/online_table.py "$OUT"/*.json --out "$OUT/table.md"
