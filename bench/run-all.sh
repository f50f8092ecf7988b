#!/usr/bin/env bash
# Runs the benchmarks behind docs/benchmarks.md, one after another, on an otherwise idle machine.
# Results: runs/bench/<name>.json (the last line of each command) and <name>.log.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=runs/bench
mkdir -p "$out"
gpt2=bench/configs/gpt2-124m.json
run() {
  local name=$1; shift
  echo "== $name: ./peftsharp $*" >&2
  ./peftsharp "$@" --json > "$out/$name.log" 2>&1
  tail -n 1 "$out/$name.log" > "$out/$name.json"
  cat "$out/$name.json" >&2
}
run train-lora-fp32  bench train --config $gpt2 --method lora --dtype float32  --batch-size 4 --seq-len 512 --steps 3
run train-lora-bf16  bench train --config $gpt2 --method lora --dtype bfloat16 --batch-size 4 --seq-len 512 --steps 3
run train-full-bf16  bench train --config $gpt2 --method full --dtype bfloat16 --batch-size 4 --seq-len 512 --steps 3
run train-full-fp32  bench train --config $gpt2 --method full --dtype float32  --batch-size 4 --seq-len 512 --steps 3
run mem-lora-fp32    bench train --config $gpt2 --method lora --dtype float32  --batch-size 1 --seq-len 256 --steps 2
run mem-full-fp32    bench train --config $gpt2 --method full --dtype float32  --batch-size 1 --seq-len 256 --steps 2
run infer-fp32       bench infer --config $gpt2 --dtype float32 --repeats 5
run infer-bf16       bench infer --config $gpt2 --dtype bfloat16 --repeats 5
run evaluate-fp32    bench evaluate --config $gpt2 --dtype float32 --items 8 --repeats 3
