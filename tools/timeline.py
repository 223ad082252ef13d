#!/usr/bin/env python3
"""Summarise a decode timeline written by `WV_CUDA_TIMELINE=FILE wv bench ...` (the CUDA
backend's src/backend/cuda/timeline.rs; stamps from kernels/gemv_mma.cu's tl_stamp):

    python3 tools/timeline.py FILE [--per-step N] [--names qkv,o,gate_up,down] [--blocks NAME] [--skew]

Every gemv_q4m launch's blocks stamp %globaltimer (ns) when they start, when their wait for
the previous kernel returns, when their units are done and when their consumers are done. This
takes the last complete decode step (N launches, default 160: 40 layers x q|k|v, o, gate|up,
down), and prints per product, averaged over the layers, in microseconds relative to the end of
the previous product's last block ("prev end"):
  start   first block's start (negative: launched early, streaming its ring)
  wait    first block's wait returning        (how long the hand-over takes)
  units   last block's units done              (the product's streaming and arithmetic)
  end     last block's end                     (its epilogue's tail)
and the spread of the blocks' units-done and end stamps. --blocks NAME also lists that
product's latest-ending blocks: each block index's own tail (end - its units done) and its units
done against the product's last, averaged over the layers, and for q|k|v the marks its attention
epilogue sets, after the block's units done (gemv_mma.cu's TL_MARK: 0 = its tile finished, 1 =
the heads it completes known, 2 = its softmax done), and when its warp 0 finished its first
unit after the wait (gemv_mma.cu's TL_FIRST). --skew prints per product how far apart
its blocks' waits return and how closely each block's units done follow its wait and its start
(correlations over the block indices). Plain Python, no dependencies.
"""
import struct
import sys

RECORDS, WORDS, HEAD_WORDS, MARK, FIRST = 65536, 10, 8, 6, 9  # src/backend/cuda/timeline.rs, gemv_mma.cu


def correlation(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else float("nan")


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    path = args[0]
    per_step = int(args[args.index("--per-step") + 1]) if "--per-step" in args else 160
    names = (args[args.index("--names") + 1] if "--names" in args else "qkv,o,gate_up,down").split(",")
    data = open(path, "rb").read()
    words = struct.unpack("<%dQ" % (len(data) // 8), data)
    tickets = words[0] & 0xFFFFFFFF
    recs = []
    for i in range(min(tickets, RECORDS)):
        r = words[HEAD_WORDS + i * WORDS: HEAD_WORDS + (i + 1) * WORDS]
        if r[0] and r[3] and r[5] + RECORDS >= tickets:  # the ring's live records
            recs.append(r)
    grid = max(r[4] & 0xFFFFFFFF for r in recs) + 1
    launches = {}
    for r in recs:
        launches.setdefault(r[5] // grid, []).append(r)
    ids = sorted(k for k, v in launches.items() if len(v) == grid)
    if any(sorted(r[4] & 0xFFFFFFFF for r in launches[k]) != list(range(grid)) for k in ids):
        sys.exit("the products' grids differ (this summary needs one grid: a model whose every "
                 "product has at least as many units as the GPU has SMs)")
    if len(ids) < 2 * per_step:
        sys.exit("%d complete launches of %d blocks: fewer than two steps of %d" % (len(ids), grid, per_step))
    agg = []
    for k in ids:
        b = launches[k]
        agg.append(dict(id=k, start=min(r[0] for r in b), wait=min(r[1] for r in b), units_first=min(r[2] for r in b),
                        units=max(r[2] for r in b), end_first=min(r[3] for r in b), end=max(r[3] for r in b)))
    # The step boundary: the longest gap between a launch's first start and the previous one's
    # end (the lm_head, the sampling and the host's turn sit there), within the last two steps.
    tail = agg[-2 * per_step:]
    gaps = [tail[i]["start"] - tail[i - 1]["end"] for i in range(1, len(tail))]
    first = 1 + max(range(len(gaps)), key=lambda i: gaps[i])
    if first + per_step > len(tail):
        first -= per_step
    step = tail[first: first + per_step]
    prev_end = tail[first - 1]["end"]
    kinds = len(names)
    sums = {n: [0.0] * 6 for n in names}
    counts = {n: 0 for n in names}
    head = (step[0]["end"] - prev_end) / 1e3
    for i, a in enumerate(step):
        n = names[i % kinds]
        row = [a["start"] - prev_end, a["wait"] - prev_end, a["units"] - prev_end, a["end"] - prev_end,
               a["units"] - a["units_first"], a["end"] - a["end_first"]]
        prev_end = a["end"]
        if i == 0:
            continue  # the step's first product also waits for the last step's lm_head and sampling
        sums[n] = [s + v / 1e3 for s, v in zip(sums[n], row)]
        counts[n] += 1
    layers = per_step // kinds
    print("grid %d blocks; step of %d launches: %.1f us from the first start to the last end" %
          (grid, per_step, (step[-1]["end"] - step[0]["start"]) / 1e3))
    print("%-8s %8s %8s %8s %8s %12s %12s   (us after the previous product's last end; mean over the layers)" %
          ("product", "start", "wait", "units", "end", "units spread", "end spread"))
    total = 0.0
    for n in names:
        s = [v / counts[n] for v in sums[n]]
        total += s[3]
        print("%-8s %8.2f %8.2f %8.2f %8.2f %12.2f %12.2f" % (n, *s))
    def block_means(want, fields):
        """Per block index of product `want`, each field's mean over the step's layers: fields
        maps a name to f(record, launch aggregate) -> value in us, or None where not set."""
        sums = {}
        for i, a in enumerate(step):
            if i == 0 or names[i % kinds] != want:
                continue
            for r in launches[a["id"]]:
                e = sums.setdefault(r[4] & 0xFFFFFFFF, {k: [0.0, 0] for k in fields})
                for k, f in fields.items():
                    v = f(r, a)
                    if v is not None:
                        e[k][0] += v
                        e[k][1] += 1
        return {blk: {k: t / c if c else None for k, (t, c) in e.items()} for blk, e in sums.items()}

    us = lambda x: x / 1e3
    if "--blocks" in args:
        want = args[args.index("--blocks") + 1]
        fields = {"tail": lambda r, a: us(r[3] - r[2]), "units": lambda r, a: us(r[2] - a["units"]),
                  # warp 0's first unit, after the wait (0: not stamped, an older file)
                  "first": lambda r, a: us(r[FIRST] - r[1]) if r[FIRST] else None}
        for j in range(3):  # the marks q|k|v's attention epilogue sets (0: not passed)
            fields[j] = lambda r, a, j=j: us(r[MARK + j] - r[2]) if r[MARK + j] else None
        rows = sorted(block_means(want, fields).items(), key=lambda x: -(x[1]["tail"] + x[1]["units"]))
        print("%s: the 20 latest-ending blocks (mean over the layers): block, own tail (end - units done), "
              "units done against the product's last, marks 0-2 after units done (where set), "
              "warp 0's first unit done after the wait" % want)
        for blk, m in rows[:20]:
            print("  %4d %8.2f %8.2f   %s %8s" % (blk, m["tail"], m["units"],
                                                " ".join("     -" if m[j] is None else "%6.2f" % m[j] for j in range(3)),
                                                "-" if m["first"] is None else "%.2f" % m["first"]))
    if "--skew" in args:
        # Per product: how far apart its blocks' waits return (a block whose SM the previous
        # product freed late starts late and pays its prologue after the release) and how
        # closely each block's units-done follows its wait (correlation over the block indices,
        # each averaged over the layers).
        print("product  wait spread  corr(wait, units done)  corr(start, units done)   (us; per block index, mean over the layers)")
        for want in names:
            means = block_means(want, {k: lambda r, a, k=k: us(r[k] - a["units"]) for k in range(3)}).values()
            st, wt, ud = ([m[k] for m in means] for k in range(3))
            print("%-8s %11.2f %23.2f %24.2f" % (want, max(wt) - min(wt), correlation(wt, ud), correlation(st, ud)))
    print("sum of the products' 'end' per layer: %.2f us (x %d layers = %.3f ms); the step's head (the last "
          "step's end to its first product's end, lm_head and sampling included): %.2f us" %
          (total, layers, total * layers / 1e3, head))


if __name__ == "__main__":
    main()
