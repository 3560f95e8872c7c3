#!/usr/bin/env bash
# The encoder comparison of docs/results.md: knn and mlp with the static encoder (`--param R.encoder=static`),
# the same eval command as the MiniLM tables; then scripts/encoder_table.py prints the
# table (seed-matched against results/<suite>-<setting>.json). The mlp cold-start runs on
# llmrouter and routerdc use 1 seed, as the MiniLM runs of them do (compute).
set -uo pipefail
cd "$(dirname "$0")/.."
run() {  # router suite setting seeds
  out=results/static/$2-$3-$1.json
  [ -s "$out" ] && { echo "skip $out (exists)"; return; }
  trouter eval --suite "$2" --setting "$3" --routers "$1" --param "$1.encoder=static" \
    --scenario all --seeds "$4" --json "$out" --no-progress
  echo "$out rc=$?"
}
mkdir -p results/static
for suite in routerbench routerdc llmrouter; do
  for setting in in-domain cold-start; do run knn "$suite" "$setting" 3; done
done
run mlp routerbench in-domain 3
run mlp routerbench cold-start 3
run mlp llmrouter in-domain 3
run mlp routerdc in-domain 3
run mlp llmrouter cold-start 1
run mlp routerdc cold-start 1
python scripts/encoder_table.py results
