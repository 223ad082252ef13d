#!/usr/bin/env python3
"""Where a decode step's wall time goes, from an Nsight Systems kernel trace.

  nsys profile -t cuda --cuda-graph-trace=node -o /tmp/wv-trace -f true \\
      wv bench --model DIR --prompt-tokens 32 --gen-tokens 16 --device cuda
  nsys stats -r cuda_gpu_trace -f csv -o /tmp/wv-trace /tmp/wv-trace.nsys-rep
  python3 tools/decode_timeline.py /tmp/wv-trace_cuda_gpu_trace.csv

A decode step is the run of kernels from one `embed` launch to the next (the last complete
one is analysed, and the median over the last STEPS steps is printed beside it). With
programmatic dependent launch, kernels overlap (a kernel's blocks start, then wait for its
predecessor), so a kernel's duration says little; what each kernel costs the step is how far
its end moves the step's frontier past every earlier kernel's end ("adds"). Summed per kernel
(GEMVs told apart by grid), "adds" totals the step's wall time, less the first kernel's start.
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict


def load(path: str):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            keys = {k.lower(): k for k in r}
            start = next(v for k, v in keys.items() if k.startswith("start"))
            dur = next(v for k, v in keys.items() if k.startswith("duration"))
            name = r[keys["name"]]
            grid = "x".join(r.get(keys.get(g, ""), "") or "" for g in ("grdx", "grdy", "grdz"))
            if name.startswith("[CUDA"):  # memcpy / memset rows
                continue
            try:
                rows.append((int(float(r[start])), int(float(r[dur])), name, grid))
            except ValueError:
                continue
    rows.sort()
    return rows


def steps(rows):
    idx = [i for i, r in enumerate(rows) if r[2].startswith("embed")]
    return [rows[a:b] for a, b in zip(idx, idx[1:])]


def attribute(step):
    """(label, adds_ns, duration_ns) per kernel, and the step's wall time."""
    t0 = step[0][0]
    frontier = t0
    out = []
    for start, dur, name, grid in step:
        end = start + dur
        label = name.split("(")[0]
        if label.startswith("gemv") or label.startswith("gemm"):
            label = f"{label} [{grid}]"
        out.append((label, max(0, end - frontier), dur))
        frontier = max(frontier, end)
    return out, frontier - t0


def main() -> None:
    rows = load(sys.argv[1])
    n_steps = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    st = steps(rows)
    if not st:
        sys.exit("no decode steps (no embed kernels) in the trace")
    decode = [s for s in st if len(s) > 50][-n_steps:]
    walls = [attribute(s)[1] for s in decode]
    per, wall = attribute(decode[-1])
    print(f"steps analysed: {len(decode)}; wall per step: median {statistics.median(walls) / 1e3:.1f} us, "
          f"last {wall / 1e3:.1f} us; kernels per step: {len(decode[-1])}")
    agg = defaultdict(lambda: [0, 0, 0])
    for label, adds, dur in per:
        a = agg[label]
        a[0] += 1
        a[1] += adds
        a[2] += dur
    print(f"{'kernel':48s} {'count':>5s} {'adds us':>9s} {'share':>6s} {'mean adds':>9s} {'mean dur':>9s}")
    for label, (n, adds, dur) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"{label[:48]:48s} {n:5d} {adds / 1e3:9.1f} {100 * adds / wall:5.1f}% "
              f"{adds / n / 1e3:9.2f} {dur / n / 1e3:9.2f}")


if __name__ == "__main__":
    main()
