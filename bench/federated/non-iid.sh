#!/usr/bin/env bash
# Federated LoRA on a non-IID split of the demo's two tasks (docs/privacy.md): 4 clients, two writing lowercase
# Shakespeare and two UPPERCASE; fedavg, ffa-lora and svd against centralised training on the union with the same
# number of optimizer steps; held-out loss per task with `peftsharp eval`. Usage: bench/federated/non-iid.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-/tmp/peftsharp-federated-non-iid}
M=.cache/demo/base-full-v1
[ -d "$M" ] || { echo "run ./peftsharp demo first (needs $M)" >&2; exit 1; }
rm -rf "$W"; mkdir -p "$W/clients"
S=data/tinyshakespeare.txt
part() { python3 -c 'import sys; d = open(sys.argv[1], encoding="utf-8").read(); sys.stdout.write(d[int(sys.argv[2]):int(sys.argv[2]) + int(sys.argv[3])])' "$S" "$1" "$2"; }
part 600000 16000 | tr 'A-Z' 'a-z' > "$W/clients/lower-a.txt"
part 620000 16000 | tr 'A-Z' 'a-z' > "$W/clients/lower-b.txt"
part 640000 16000 | tr 'a-z' 'A-Z' > "$W/clients/upper-a.txt"
part 660000 16000 | tr 'a-z' 'A-Z' > "$W/clients/upper-b.txt"
part 700000 6000 | tr 'A-Z' 'a-z' > "$W/heldout-lower.txt"
part 710000 6000 | tr 'a-z' 'A-Z' > "$W/heldout-upper.txt"
cat "$W/heldout-lower.txt" "$W/heldout-upper.txt" > "$W/heldout.txt"
cat "$W"/clients/*.txt > "$W/union.txt"
ROUNDS=${ROUNDS:-5} LOCAL=${LOCAL:-4} K=4
COMMON=(--model "$M" --r 8 --alpha 16 --lr 2e-3 --batch-size 4 --seq-len 64 --seed 42)
score() { ./peftsharp eval --model "$M" --text "$2" --context 64 --json ${1:+--adapter "$1"} 2>/dev/null | tail -1 | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["nll"])'; }
echo "| setting | held-out loss, lowercase | held-out loss, UPPERCASE | seconds |"
echo "|---|---|---|---|"
echo "| base model, no adapter | $(score "" "$W/heldout-lower.txt") | $(score "" "$W/heldout-upper.txt") | |"
for agg in fedavg ffa-lora svd; do
  t0=$(date +%s)
  ./peftsharp federated simulate "${COMMON[@]}" --clients "$W/clients" --rounds "$ROUNDS" --clients-per-round $K --local-steps "$LOCAL" \
      --aggregation $agg --eval-data "$W/heldout.txt" --out "$W/fed-$agg" --json > "$W/fed-$agg.json" 2> "$W/fed-$agg.log"
  echo "| federated $agg ($ROUNDS rounds × $K clients × $LOCAL steps) | $(score "$W/fed-$agg" "$W/heldout-lower.txt") | $(score "$W/fed-$agg" "$W/heldout-upper.txt") | $(( $(date +%s) - t0 )) |"
done
t0=$(date +%s)
./peftsharp train "${COMMON[@]}" --data "$W/union.txt" --steps $(( ROUNDS * K * LOCAL )) --out "$W/central" > "$W/central.log" 2>&1
echo "| centralised on the union ($(( ROUNDS * K * LOCAL )) steps) | $(score "$W/central" "$W/heldout-lower.txt") | $(score "$W/central" "$W/heldout-upper.txt") | $(( $(date +%s) - t0 )) |"
