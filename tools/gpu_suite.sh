#!/usr/bin/env bash
# tools/gpu_suite.sh — the CUDA backend's one device script: every GPU test, the same tests under
# compute-sanitizer, kernel timings, and `wv bench` on a random 13B-shaped checkpoint.
#
# Build on a machine with Rust (the device has none), then run this from the repository root on
# the device:
#   cargo test --release --no-run --test gpu --test gpu_model 2>&1 | grep -oE 'target/release/deps/gpu(_model)?-[0-9a-f]*'
#   cargo build --release --bins
#   mkdir -p .dev/bin && cp <that gpu-… file> .dev/bin/gpu && cp <that gpu_model-… file> .dev/bin/gpu_model
#   cp target/release/wv .dev/bin/wv
#   (device) OUT=/some/dir bash tools/gpu_suite.sh
#
# Fixtures: tests/fixtures/models, else .dev/fixtures (made here with
# `python3 tools/make_fixtures.py --no-torch --out .dev/fixtures` when neither exists).
# The bench phase also runs A/Bs in the same run: the short bench with WV_CUDA_GEMV=wide,
# graphs off, PDL off and the persistent decode kernel, wv's row layout (WV_CUDA_MMA_LAYOUT=rows,
# also at 1,500 tokens), the unit-major layout unfused and without its L2 prefetches, 1,500
# tokens without decode fusion, and 1 ms of host work per token with and without decode ahead.
# Env: OUT (logs; default ./gpu-out), SKIP_TESTS=1, SKIP_SANITIZER=1, SKIP_BENCH=1, SKIP_AB=1 (only
#      the default benches and those without the fused prefill product),
#      BENCH_LAYERS (default 40), BENCH_DIR (default /tmp/wv-bench-13b).
# Two test binaries: gpu (tests/gpu.rs: op tests, kernel timings) and gpu_model
# (tests/gpu_model.rs: whole-model tests), each in its own phases (tests / tests-model,
# tests-plain / tests-plain-model, sanitizer / sanitizer-model), and again in wv's row layout
# (WV_CUDA_MMA_LAYOUT=rows; the default on sm_90 is the unit-major layout: tests-rows /
# tests-rows-ops, sanitizer-rows / sanitizer-rows-ops).
# Each phase logs to $LOGS/NAME.log; at the end they are gathered into four files in $OUT
# (tests.log, sanitizer.log, bench.log, summary.log) and a summary table is printed last.
set -u
OUT=${OUT:-$PWD/gpu-out}
LOGS=$(mktemp -d /tmp/wv-suite.XXXXXX)
mkdir -p "$OUT"
export WV_ROOT=$PWD
BIN=${BIN:-.dev/bin}
SUMMARY=()

phase() { # phase NAME TIMEOUT CMD... : run with a time limit, log to $OUT/NAME.log, record rc and time
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    SUMMARY+=("$(printf '%-18s rc=%-4s %5ss' "$name" "$rc" $(($(date +%s) - t0)))")
    echo "${SUMMARY[-1]}"
    return $rc
}

{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1
    nvcc --version 2>&1 | tail -1
    ls /usr/local/cuda/lib64/ 2>/dev/null | grep -E '^lib(nvrtc|cublas)' | tr '\n' ' '
    echo
    ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnvrtc\.so|libcublas\.so' | head
    python3 -c 'import nvidia, os; print(nvidia.__path__)' 2>/dev/null
} >"$LOGS/env.log" 2>&1
cat "$LOGS/env.log"

if [ ! -d tests/fixtures/models ] && [ ! -d .dev/fixtures ]; then
    phase fixtures 120 python3 tools/make_fixtures.py --no-torch --out .dev/fixtures
fi

if [ -z "${SKIP_TESTS:-}" ]; then
    phase tests "${TEST_LIMIT:-200}" "$BIN/gpu" --ignored --test-threads=1 --nocapture
    phase tests-model "${TEST_LIMIT:-200}" "$BIN/gpu_model" --ignored --test-threads=1 --nocapture
    # The non-ignored tests too (the Device-error test sees a GPU here and must pass).
    phase tests-plain 60 "$BIN/gpu" --test-threads=1 --nocapture
    phase tests-plain-model 60 "$BIN/gpu_model" --test-threads=1 --nocapture
    # wv's row layout (WV_CUDA_MMA_LAYOUT=rows; chosen once per process — by default on sm_90
    # the matrices gemv_q4m takes are held only as unit-major copies, decoded on gemv_q4m and
    # prefilled on gemm_q4_tma over 4-D tensor maps): every model test, and the op tests of
    # the 4-bit products, on the row layout's kernels (gemv_q4l, the dequantising prefill).
    phase tests-rows "${TEST_LIMIT:-200}" env WV_CUDA_MMA_LAYOUT=rows "$BIN/gpu_model" --ignored --test-threads=1 --nocapture
    phase tests-rows-ops "${TEST_LIMIT:-200}" env WV_CUDA_MMA_LAYOUT=rows "$BIN/gpu" --ignored --test-threads=1 --nocapture op_linear_4bit op_gemm_q4_prefill_shapes
    # The command line on the device (how hidden checkpoints are checked).
    F=$(ls -d tests/fixtures/models/*/ .dev/fixtures/*/ 2>/dev/null | head -1)
    phase cli 60 sh -c "'$BIN/wv' logits --model '$F' --tokens 1,450,4996 --device cuda > '$LOGS/cli.json' && head -c 300 '$LOGS/cli.json'"
fi

if [ -z "${SKIP_BENCH:-}" ]; then
    BD=${BENCH_DIR:-/tmp/wv-bench-13b}
    if [ ! -f "$BD/model.safetensors" ]; then
        phase make-ckpt 200 python3 tools/make_bench_checkpoint.py "$BD" --layers "${BENCH_LAYERS:-40}"
    fi
    export WV_LOG=1
    phase bench-short 90 "$BIN/wv" bench --model "$BD" --prompt-tokens 32 --gen-tokens 64 --device cuda
    phase bench-512 90 "$BIN/wv" bench --model "$BD" --prompt-tokens 512 --gen-tokens 64 --device cuda
    phase bench-1500 90 "$BIN/wv" bench --model "$BD" --prompt-tokens 1500 --gen-tokens 64 --device cuda
    # Prefill without the fused 4-bit product (dequantisation + cuBLAS), same run.
    phase bench-noqgemm-32 90 env WV_CUDA_QGEMM=0 "$BIN/wv" bench --model "$BD" --prompt-tokens 32 --gen-tokens 64 --device cuda
    phase bench-noqgemm-512 90 env WV_CUDA_QGEMM=0 "$BIN/wv" bench --model "$BD" --prompt-tokens 512 --gen-tokens 64 --device cuda
    [ -n "${SKIP_AB:-}" ] || {
    phase bench-nograph 90 env WV_CUDA_GRAPH=0 "$BIN/wv" bench --model "$BD" --prompt-tokens 32 --gen-tokens 64 --device cuda
    phase bench-wide 90 env WV_CUDA_GEMV=wide "$BIN/wv" bench --model "$BD" --prompt-tokens 32 --gen-tokens 64 --device cuda
    phase bench-nofuse 90 env WV_CUDA_FUSE=0 "$BIN/wv" bench --model "$BD" --prompt-tokens 1500 --gen-tokens 64 --device cuda
    phase kernels 100 "$BIN/gpu" --ignored --nocapture bench_kernels
    phase bench-nopdl 90 env WV_CUDA_PDL=0 "$BIN/wv" bench --model "$BD" --prompt-tokens 32 --gen-tokens 64 --device cuda
    phase bench-persist 90 env WV_CUDA_PERSIST=1 "$BIN/wv" bench --model "$BD" --prompt-tokens 32 --gen-tokens 64 --device cuda
    # wv's row layout (the default before the sixteenth session), short and long context; the
    # unit-major layout unfused and without its L2 prefetches.
    phase bench-rows 90 env WV_CUDA_MMA_LAYOUT=rows "$BIN/wv" bench --model "$BD" --prompt-tokens 32 --gen-tokens 64 --device cuda
    phase bench-rows-1500 90 env WV_CUDA_MMA_LAYOUT=rows "$BIN/wv" bench --model "$BD" --prompt-tokens 1500 --gen-tokens 64 --device cuda
    phase bench-unfused 90 env WV_CUDA_MMA_FUSE=0 "$BIN/wv" bench --model "$BD" --prompt-tokens 32 --gen-tokens 64 --device cuda
    phase bench-noprefetch 90 env WV_CUDA_MMA_PREFETCH=0 "$BIN/wv" bench --model "$BD" --prompt-tokens 32 --gen-tokens 64 --device cuda
    # 1 ms of host work per token (an application's callback), with and without decode ahead.
    phase bench-host1 90 "$BIN/wv" bench --model "$BD" --prompt-tokens 32 --gen-tokens 64 --device cuda --host-ms 1
    phase bench-host1-noahead 90 env WV_CUDA_AHEAD=0 "$BIN/wv" bench --model "$BD" --prompt-tokens 32 --gen-tokens 64 --device cuda --host-ms 1
    }
    unset WV_LOG
fi

if [ -z "${SKIP_SANITIZER:-}" ]; then
    # memcheck over every GPU test except the deliberate out-of-memory and the timings.
    phase sanitizer "${SAN_LIMIT:-240}" compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
        "$BIN/gpu" --ignored --test-threads=1 --skip bench_kernels
    phase sanitizer-model "${SAN_LIMIT:-240}" compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
        "$BIN/gpu_model" --ignored --test-threads=1 --skip model_out_of_memory
    # wv's row layout's paths (decode on gemv_q4l, the dequantising prefill).
    phase sanitizer-rows "${SAN_LIMIT:-240}" env WV_CUDA_MMA_LAYOUT=rows compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
        "$BIN/gpu_model" --ignored --test-threads=1 --skip model_out_of_memory
    phase sanitizer-rows-ops "${SAN_LIMIT:-240}" env WV_CUDA_MMA_LAYOUT=rows compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
        "$BIN/gpu" --ignored --test-threads=1 op_linear_4bit op_gemm_q4_prefill_shapes
fi

# Gather the logs into at most four files (the device returns few files).
for f in env tests tests-model tests-plain tests-plain-model tests-rows tests-rows-ops cli; do
    [ -f "$LOGS/$f.log" ] && { echo "=== $f"; cat "$LOGS/$f.log"; }
done >"$OUT/tests.log" 2>/dev/null
for f in sanitizer sanitizer-model sanitizer-rows sanitizer-rows-ops; do
    [ -f "$LOGS/$f.log" ] && { echo "=== $f"; cat "$LOGS/$f.log"; }
done >"$OUT/sanitizer.log" 2>/dev/null
for f in make-ckpt bench-short bench-512 bench-1500 bench-noqgemm-32 bench-noqgemm-512 bench-nograph bench-wide bench-nofuse kernels bench-nopdl bench-persist bench-rows bench-rows-1500 bench-unfused bench-noprefetch bench-host1 bench-host1-noahead; do
    [ -f "$LOGS/$f.log" ] && { echo "=== $f"; cat "$LOGS/$f.log"; }
done >"$OUT/bench.log" 2>/dev/null
{
echo
echo "================ summary ================"
printf '%s\n' "${SUMMARY[@]}"
for f in tests tests-model tests-plain tests-plain-model tests-rows tests-rows-ops sanitizer sanitizer-model sanitizer-rows sanitizer-rows-ops cli; do
    [ -f "$LOGS/$f.log" ] || continue
    echo "--- $f"
    grep -E '^test .* (ok|FAILED|ignored)$|^test result|panicked at|ERROR SUMMARY|^=+ (Invalid|Error)|Program hit' "$LOGS/$f.log" | grep -v ' ignored$' | head -40
done
if [ -f "$LOGS/tests.log" ] || [ -f "$LOGS/tests-model.log" ]; then
    echo "--- measurements"
    cat "$LOGS/tests.log" "$LOGS/tests-model.log" 2>/dev/null |
        grep -oE 'BENCH.*|^fixture.*|^1100-token.*|^kjv-tiny.*|^attention t=.*|^linear .* t=1 default.*' | head -60
fi
[ -f "$LOGS/kernels.log" ] && { echo "--- kernels"; grep -oE 'BENCH .*' "$LOGS/kernels.log"; }
for f in bench-short bench-512 bench-1500 bench-noqgemm-32 bench-noqgemm-512 bench-nograph bench-wide bench-nofuse bench-nopdl bench-persist bench-rows bench-rows-1500 bench-unfused bench-noprefetch bench-host1 bench-host1-noahead; do
    [ -f "$LOGS/$f.log" ] || continue
    python3 - "$LOGS/$f.log" "$f" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
m = re.search(r'\{.*\}', text, re.S)
if not m:
    print(sys.argv[2], "no JSON:", text[-600:])
    sys.exit()
r = json.loads(m.group(0))
cold = r.get('cold_prefill_seconds')
cold = f" (cold {r['prompt_tokens'] / cold:.0f})" if cold else ""
print(f"{sys.argv[2]:12s} load {r['load_seconds']:.1f}s prefill {r['prompt_tokens']} tok {r['prefill_tokens_per_s']:.0f}{cold} tok/s "
      f"ttft {r['time_to_first_token_ms']:.1f} ms decode {r['decode_tokens_per_s']:.1f} tok/s "
      f"({r['decode_ms_per_token']:.2f} ms, {r['decode_bytes_per_s']/1e9:.0f} GB/s) peak dev {(r.get('peak_device_bytes') or 0)/2**30:.2f} GiB "
      f"weights {r['weight_bytes']/2**30:.2f} GiB")
EOF
done
grep -h "^wv: " "$LOGS"/bench-short.log 2>/dev/null | head -5
} 2>&1 | tee "$OUT/summary.log"
