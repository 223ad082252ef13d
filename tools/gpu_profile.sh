#!/usr/bin/env bash
# tools/gpu_profile.sh — where the GPU time goes: `wv bench` with wv's own per-kernel timer
# (WV_CUDA_PROFILE=1: CUDA events around every launch, programmatic dependent launch off) on the
# random 13B checkpoint (made when missing), printed as a table for the prefill and for decode.
#   (device) OUT=/some/dir bash tools/gpu_profile.sh
# Env: BIN (default .dev/bin), BENCH_DIR (default /tmp/wv-bench-13b), PROMPT (default 512),
#      GEN (default 32), GRAPH (default 0: decode launched kernel by kernel, so each kernel is
#      timed; 1 times whole captured steps). Other WV_* knobs pass through to wv.
set -u
OUT=${OUT:-$PWD/gpu-out}
BIN=${BIN:-.dev/bin}
BD=${BENCH_DIR:-/tmp/wv-bench-13b}
mkdir -p "$OUT"
export WV_ROOT=$PWD
[ -f "$BD/model.safetensors" ] || python3 tools/make_bench_checkpoint.py "$BD" >/dev/null
WV_CUDA_PROFILE=1 WV_CUDA_GRAPH=${GRAPH:-0} "$BIN/wv" bench --model "$BD" \
    --prompt-tokens "${PROMPT:-512}" --gen-tokens "${GEN:-32}" --device cuda >"$OUT/profile.json"
python3 - "$OUT/profile.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("prefill %.1f ms (%.0f tok/s), decode %.2f ms/token (profiling slows both)"
      % (d["prefill_seconds"] * 1e3, d["prefill_tokens_per_s"], d["decode_ms_per_token"]))
for key, per in (("profile_prefill", 1), ("profile_decode", d["gen_tokens"])):
    rows = d.get(key) or []
    total = sum(r["ms"] for r in rows)
    print(f"{key}: {total:.2f} ms" + (f" ({total / per:.3f} ms per token)" if per > 1 else ""))
    for r in rows:
        print(f"  {r['op']:24s} {r['launches']:6d} launches {r['ms']:9.3f} ms {100 * r['ms'] / total:5.1f}%")
PY
