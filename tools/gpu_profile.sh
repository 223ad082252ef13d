#!/usr/bin/env bash
# tools/gpu_profile.sh — where the time goes: per-kernel GPU time of `wv bench` (prefill and
# decode) under Nsight Systems, on the random 13B checkpoint (made when missing).
#   (device) OUT=/some/dir bash tools/gpu_profile.sh
# Env: BIN (default .dev/bin), BENCH_DIR (default /tmp/wv-bench-13b), PROMPT (default 512),
#      GEN (default 64), WV_* knobs pass through to wv.
set -u
OUT=${OUT:-$PWD/gpu-out}
BIN=${BIN:-.dev/bin}
BD=${BENCH_DIR:-/tmp/wv-bench-13b}
mkdir -p "$OUT"
export WV_ROOT=$PWD
[ -f "$BD/model.safetensors" ] || python3 tools/make_bench_checkpoint.py "$BD" >/dev/null
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/nsight-systems*/bin/nsys 2>/dev/null | head -1)
echo "nsys: ${NSYS:-none}"
if [ -n "$NSYS" ]; then
    "$NSYS" profile -o /tmp/wv-prof --force-overwrite true --trace cuda --cuda-graph-trace node \
        "$BIN/wv" bench --model "$BD" --prompt-tokens "${PROMPT:-512}" --gen-tokens "${GEN:-64}" --device cuda \
        >"$OUT/profile-bench.json" 2>"$OUT/profile-nsys.log"
    cat "$OUT/profile-bench.json"
    "$NSYS" stats --report cuda_gpu_kern_sum --format csv /tmp/wv-prof.nsys-rep >"$OUT/profile-kernels.csv" 2>>"$OUT/profile-nsys.log"
    "$NSYS" stats --report cuda_gpu_trace --format csv /tmp/wv-prof.nsys-rep >"$OUT/profile-trace.csv" 2>>"$OUT/profile-nsys.log"
    gzip -f "$OUT/profile-trace.csv"
    head -40 "$OUT/profile-kernels.csv" | cut -c1-220
fi
