#!/usr/bin/env bash
# tools/bench_ab.sh — A/B timings with `wv bench` on the device, each setting twice, alternating:
#   bash tools/bench_ab.sh PROMPT_TOKENS "label ENV=VAL ..." "label2 ENV=VAL ..." ...  (ROUNDS=2, GEN=32)
# (a label alone runs the defaults). Needs .dev/bin/wv (BIN) and the random 13B checkpoint in
# BENCH_DIR (default /tmp/wv-bench-13b; tools/make_bench_checkpoint.py writes it).
set -u
BIN=${BIN:-.dev/bin}
BD=${BENCH_DIR:-/tmp/wv-bench-13b}
prompt=$1
shift
summarise() {
    python3 -c '
import json, re, sys
m = re.search(r"\{.*\}", sys.stdin.read(), re.S)
if not m:
    print("no result")
else:
    r = json.loads(m.group(0))
    d, ms = r["decode_tokens_per_s"], r["decode_ms_per_token"]
    p, tt = r["prefill_tokens_per_s"], r["time_to_first_token_ms"]
    print("decode %.1f tok/s (%.3f ms)  prefill %.0f tok/s (ttft %.1f ms)" % (d, ms, p, tt))
'
}
for round in $(seq 1 "${ROUNDS:-2}"); do
    for spec in "$@"; do
        read -r label envs <<<"$spec"
        printf '%-24s p=%-5s ' "$label" "$prompt"
        timeout "${BENCH_TIMEOUT:-120}" env $envs "$BIN/wv" bench --model "$BD" --prompt-tokens "$prompt" --gen-tokens "${GEN:-32}" --device cuda 2>/dev/null | summarise
    done
done
