#!/usr/bin/env bash
# Produce the transformers-float64 fixture goldens and the trained demo model on a GPU machine.
#
#   bash tools/device_fixtures.sh          (from the repo root; needs .dev/kjv.txt; writes tars to $OUT)
#
# Steps: environment report, self-tests of the packer and of GPTQ, tools/make_fixtures.py
# (transformers mode, rewrites tests/fixtures/models/*), tools/train_demo.py (~4 min of
# training, writes models/kjv-tiny/), then packs everything as gzip'ed tars (each < 15 MB,
# at most 7) directly in "$OUT":
#   fixtures-N.tar.gz  -> tests/fixtures/models/<name>/...   (extract with -C <repo root>)
#   kjv-tiny.tar.gz    -> models/kjv-tiny/...
#   logs.tar.gz        -> .dev/device-logs/...
# A failing step prints "FAILED: ..." and the script goes on; the exit status is non-zero if
# anything failed.  Total run time target: under 8 minutes on one H100.
set -euo pipefail
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1

OUT="${OUT:-$PWD/.dev/device-out}"
mkdir -p "$OUT"
START=$(date +%s)
LOGDIR=".dev/device-logs"
rm -rf "$LOGDIR"
mkdir -p "$LOGDIR"
FAILED=()

say() { echo "=== [$(( $(date +%s) - START ))s] $*"; }
fail() { echo "FAILED: $*"; FAILED+=("$*"); }

if [ ! -f tools/make_fixtures.py ]; then
  echo "FAILED: run this from the repository root (tools/make_fixtures.py not found)"
  exit 2
fi

say "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "(nvidia-smi unavailable)"
if ! python3 - <<'EOF' 2>&1 | tee "$LOGDIR/env.log"
import sys
import numpy, safetensors, tokenizers, torch, transformers
print("python", sys.version.split()[0], "| numpy", numpy.__version__, "| safetensors", safetensors.__version__,
      "| tokenizers", tokenizers.__version__)
print("torch", torch.__version__, "| cuda available", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU",
      "| transformers", transformers.__version__)
EOF
then
  fail "python environment (imports)"
fi
if [ ! -s .dev/kjv.txt ]; then
  fail ".dev/kjv.txt is missing (carry the .dev folder)"
fi

say "self-tests"
if ! timeout 60 python3 tools/gptq_pack.py --selftest 2>&1 | tee "$LOGDIR/selftest_pack.log"; then
  fail "gptq_pack self-test"
fi
if ! timeout 90 python3 tools/gptq_quantize.py --selftest 2>&1 | tee "$LOGDIR/selftest_gptq.log"; then
  fail "gptq_quantize self-test"
fi

say "fixtures: tools/make_fixtures.py (transformers float64 goldens + numpy cross-check)"
if ! timeout 240 python3 tools/make_fixtures.py 2>&1 | tee "$LOGDIR/make_fixtures.log"; then
  fail "make_fixtures.py (see the lines above)"
fi

TRAIN_BUDGET="${TRAIN_BUDGET:-225}"   # seconds of training (overridable for tests)
TRAIN_EXTRA="${TRAIN_EXTRA:-}"        # extra train_demo.py arguments (tests only)
say "demo model: tools/train_demo.py (training budget ${TRAIN_BUDGET} s)"
if [ -s .dev/kjv.txt ]; then
  # shellcheck disable=SC2086
  if ! timeout 480 python3 tools/train_demo.py --kjv .dev/kjv.txt --out models/kjv-tiny \
       --budget "$TRAIN_BUDGET" $TRAIN_EXTRA 2>&1 | tee "$LOGDIR/train_demo.log"; then
    fail "train_demo.py (see the lines above)"
  fi
else
  fail "train_demo.py skipped (no .dev/kjv.txt)"
fi

say "packing into $OUT"
rm -f "$OUT"/fixtures-*.tar.gz "$OUT"/kjv-tiny.tar.gz "$OUT"/logs.tar.gz
if ! python3 - "$OUT" <<'EOF' 2>&1 | tee "$LOGDIR/pack.log"
import os, sys, tarfile
out = sys.argv[1]
LIMIT = 14_000_000  # bytes of payload per tar (the tars must stay < 15 MB)

def size_of(d):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs
               if not os.path.islink(os.path.join(r, f)))

def make(name, dirs):
    path = os.path.join(out, name)
    with tarfile.open(path, "w:gz", compresslevel=6) as t:
        for d in dirs:
            t.add(d)  # symlinks are stored as symlinks
    print(f"  {name}: {os.path.getsize(path) / 1e6:.2f} MB  <- {', '.join(dirs)}")
    if os.path.getsize(path) >= 15_000_000:
        raise SystemExit(f"{name} is too big")

root = "tests/fixtures/models"
fx = sorted((os.path.join(root, n) for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))),
            key=lambda d: -size_of(d)) if os.path.isdir(root) else []
bins = []
for d in fx:  # first-fit decreasing
    s = size_of(d)
    for b in bins:
        if b[0] + s <= LIMIT:
            b[0] += s
            b[1].append(d)
            break
    else:
        bins.append([s, [d]])
if len(bins) > 5:
    raise SystemExit(f"fixtures need {len(bins)} tars (> 5)")
for i, (_, dirs) in enumerate(bins, 1):
    make(f"fixtures-{i}.tar.gz", sorted(dirs))
if os.path.isdir("models/kjv-tiny"):
    make("kjv-tiny.tar.gz", ["models/kjv-tiny"])
else:
    print("  (no models/kjv-tiny to pack)")
EOF
then
  fail "packing fixtures / demo model"
fi
# logs last, so that they include everything above
( cd "$OUT" && ls -la ) > "$LOGDIR/out_listing.txt" 2>&1 || true
tar -czf "$OUT/logs.tar.gz" "$LOGDIR" || fail "packing logs"

say "train report (models/kjv-tiny/train_report.json, condensed)"
if [ -f models/kjv-tiny/train_report.json ]; then
  python3 - <<'EOF' || true
import json
r = json.load(open("models/kjv-tiny/train_report.json"))
keys = ["steps", "final_train_loss", "heldout_ppl_fp32", "heldout_ppl_fp16_embeddings", "heldout_ppl_gptq",
        "heldout_ppl_rtn", "total_seconds"]
print(json.dumps({k: r.get(k) for k in keys}, indent=1))
t = r.get("training", {})
print("training:", json.dumps({k: t.get(k) for k in ("device", "planned_steps", "best_step", "best_dev_loss",
                                                     "epochs", "train_seconds")}))
print("golden:", json.dumps(r.get("golden", {}), ensure_ascii=False))
for s in r.get("samples", []):
    print(f"  [{s['mode']}] {s['text']!r}")
print("files:", json.dumps(r.get("files", {})))
EOF
else
  echo "(no train report)"
fi

say "outputs in $OUT"
ls -la "$OUT"
echo "unpack with:  for f in <dir>/*.tar.gz; do tar -xzf \"\$f\" -C <repo root>; done"
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "=== SUMMARY: ${#FAILED[@]} step(s) FAILED:"
  for f in "${FAILED[@]}"; do echo "  - $f"; done
  exit 1
fi
echo "=== SUMMARY: all steps OK in $(( $(date +%s) - START ))s"
