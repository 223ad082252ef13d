#!/usr/bin/env python3
"""GPTQ (Frantar et al., 2022) weight quantisation in torch.

For one linear layer ``y = x @ W.T`` (W ``[out, in]``, torch/HF orientation):

1. Accumulate the Hessian of the layer-wise squared error,
   ``H = 2/N * sum_n x_n x_n^T`` (``[in, in]``), over calibration inputs
   (:class:`HessianAccumulator`).
2. Dead inputs (``H_kk == 0``) get ``H_kk = 1`` and ``W[:, k] = 0``.
   With act-order, columns are permuted by descending ``diag(H)``.
3. Dampen: ``H += damp * mean(diag(H)) * I`` (damp = 1 %), take
   ``U = chol(H^-1)`` (upper Cholesky factor of the inverse).
4. Quantise column by column in blocks of 128: each column is rounded with its
   group's scale/zero (min/max grid, recomputed from the current, already
   error-updated weights whenever a column starts a new group), the scaled
   error ``(w - q) / U_kk`` is propagated to the remaining columns of the block
   (``W[:, j] -= err * U_kj``) and, lazily, after the block to all later columns.
5. Outputs integer codes, per-group scales and zero points and ``g_idx`` in the
   original column order (for act-order ``g_idx[k] = position_of_k // group``).

Grid details: asymmetric: ``xmin = min(w.min(), 0)``, ``xmax = max(w.max(), 0)``,
``scale = (xmax - xmin) / maxq``, ``zero = round(-xmin / scale)``; symmetric:
``xmax = max(|xmin|, xmax)``, ``scale = 2 xmax / maxq``, ``zero = (maxq + 1) / 2``;
``q = clamp(round(w / scale) + zero, 0, maxq)``, ``w_hat = scale (q - zero)``.
By default scales are rounded to fp16 inside the loop (that is what the
checkpoint stores, so the error feedback sees the real grid) and, for the v1
``gptq`` checkpoint format, zero points are clamped to ``>= 1`` because v1
stores ``zero - 1`` and cannot represent 0.

Run ``python3 tools/gptq_quantize.py --selftest`` (CPU is fine) to compare
GPTQ against round-to-nearest on a synthetic layer.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Optional

import torch

sys.dont_write_bytecode = True  # keep tools/ free of __pycache__


class HessianAccumulator:
    """Running ``H = 2/N * X^T X`` over all rows seen (float64)."""

    def __init__(self, in_features: int, device=None):
        self.H = torch.zeros(in_features, in_features, dtype=torch.float64, device=device)
        self.n = 0

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(self.H.device, torch.float64)
        m = x.shape[0]
        if m == 0:
            return
        self.H *= self.n / (self.n + m)
        self.n += m
        self.H += (2.0 / self.n) * (x.T @ x)


@dataclass
class GPTQResult:
    intweight: torch.Tensor  # int32 [in, out]   codes in [0, maxq], original column order
    scales: torch.Tensor     # float32 [groups, out]
    zeros: torch.Tensor      # int32 [groups, out] real zero points
    g_idx: torch.Tensor      # int32 [in]
    dequant: torch.Tensor    # float32 [out, in]  scale * (q - zero), original order
    perm: Optional[torch.Tensor]
    loss: float              # sum of the GPTQ objective terms (w - q)^2 / U_kk^2 / 2


def _grid(w: torch.Tensor, bits: int, sym: bool, min_zero: int, scale_dtype) -> tuple:
    """Per-row scale/zero for the columns in ``w`` ([rows, cols])."""
    maxq = (1 << bits) - 1
    xmin = torch.clamp(w.min(dim=1).values, max=0)
    xmax = torch.clamp(w.max(dim=1).values, min=0)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    both0 = (xmin == 0) & (xmax == 0)
    xmin = torch.where(both0, torch.full_like(xmin, -1.0), xmin)
    xmax = torch.where(both0, torch.full_like(xmax, 1.0), xmax)
    scale = (xmax - xmin) / maxq
    if scale_dtype is not None:
        scale = scale.to(scale_dtype).to(w.dtype)
        scale = torch.where(scale > 0, scale, torch.full_like(scale, torch.finfo(torch.float16).tiny))
    if sym:
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        zero = torch.round(-xmin / scale).clamp(min_zero, maxq)
    return scale, zero


def _quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int):
    q = torch.clamp(torch.round(w / scale) + zero, 0, maxq)
    return q, scale * (q - zero)


@torch.no_grad()
def gptq_quantize(W: torch.Tensor, H: torch.Tensor, bits: int = 4, group_size: int = 128,
                  sym: bool = False, act_order: bool = False, percdamp: float = 0.01,
                  blocksize: int = 128, checkpoint_format: str = "gptq",
                  scale_dtype=torch.float16, dtype=torch.float32) -> GPTQResult:
    """Quantise ``W`` ([out, in]) given the Hessian ``H`` ([in, in]) of its inputs."""
    if bits not in (2, 3, 4, 8):
        raise ValueError("bits must be 2, 3, 4 or 8")
    maxq = (1 << bits) - 1
    min_zero = 1 if (checkpoint_format == "gptq" and not sym) else 0
    dev = W.device
    W = W.detach().clone().to(dtype)
    rows, cols = W.shape
    gs = cols if group_size in (-1, 0, None) else int(group_size)
    H = H.detach().clone().to(dev, torch.float64)
    if H.shape != (cols, cols):
        raise ValueError(f"H has shape {tuple(H.shape)}, expected ({cols}, {cols})")

    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
        invperm = torch.argsort(perm)

    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(cols, device=dev)
    H[idx, idx] += damp
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    U = torch.linalg.cholesky(Hinv, upper=True).to(dtype)

    Q = torch.zeros_like(W)
    Qint = torch.zeros(rows, cols, dtype=torch.int32, device=dev)
    n_groups = -(-cols // gs)
    scales = torch.zeros(n_groups, rows, dtype=dtype, device=dev)
    zeros = torch.zeros(n_groups, rows, dtype=dtype, device=dev)
    losses = torch.zeros(rows, dtype=torch.float64, device=dev)
    scale = zero = None

    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(count):
            col = i1 + i
            if col % gs == 0:
                # current (error-updated) values of this group's columns
                ge = min(col + gs, cols)
                inside = W1[:, i:min(count, ge - i1)]
                if ge > i2:
                    inside = torch.cat([inside, W[:, i2:ge]], dim=1)
                scale, zero = _grid(inside, bits, sym, min_zero, scale_dtype)
                scales[col // gs] = scale
                zeros[col // gs] = zero
            w = W1[:, i]
            d = U1[i, i]
            q, wq = _quant(w, scale, zero, maxq)
            Q1[:, i] = wq
            Qint[:, col] = q.to(torch.int32)
            losses += ((w - wq).double() ** 2) / (2 * float(d) ** 2)
            err = (w - wq) / d
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            Err1[:, i] = err
        Q[:, i1:i2] = Q1
        if i2 < cols:
            W[:, i2:] -= Err1 @ U[i1:i2, i2:]

    g_idx = (torch.arange(cols, device=dev) // gs).to(torch.int32)
    if act_order:
        Q = Q[:, invperm]
        Qint = Qint[:, invperm]
        g_idx = g_idx[invperm]
    return GPTQResult(
        intweight=Qint.T.contiguous(),
        scales=scales.float(),
        zeros=zeros.round().to(torch.int32),
        g_idx=g_idx.contiguous(),
        dequant=Q.float(),
        perm=perm,
        loss=float(losses.sum()),
    )


@torch.no_grad()
def rtn_quantize(W: torch.Tensor, bits: int = 4, group_size: int = 128, sym: bool = False,
                 checkpoint_format: str = "gptq", scale_dtype=torch.float16) -> torch.Tensor:
    """Round-to-nearest with the same grid (for comparison). Returns dequantised [out, in]."""
    maxq = (1 << bits) - 1
    min_zero = 1 if (checkpoint_format == "gptq" and not sym) else 0
    W = W.float()
    rows, cols = W.shape
    gs = cols if group_size in (-1, 0, None) else group_size
    out = torch.empty_like(W)
    for g0 in range(0, cols, gs):
        blk = W[:, g0:g0 + gs]
        s, z = _grid(blk, bits, sym, min_zero, scale_dtype)
        out[:, g0:g0 + gs] = _quant(blk, s[:, None], z[:, None], maxq)[1]
    return out


def to_checkpoint_tensors(res: GPTQResult, bits: int, checkpoint_format: str = "gptq",
                          scales_dtype="float16", bias=None) -> dict:
    """Pack a :class:`GPTQResult` into numpy checkpoint tensors (qweight, qzeros, scales, g_idx[, bias])."""
    import numpy as np
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gptq_pack
    out = {
        "qweight": gptq_pack.pack_qweight(res.intweight.cpu().numpy(), bits),
        "qzeros": gptq_pack.pack_qzeros(res.zeros.cpu().numpy(), bits, checkpoint_format),
        "scales": res.scales.cpu().numpy().astype(scales_dtype),
        "g_idx": res.g_idx.cpu().numpy().astype(np.int32),
    }
    if bias is not None:
        out["bias"] = bias.detach().cpu().float().numpy().astype(np.float16)
    return out


def selftest() -> None:
    import numpy as np
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gptq_pack
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    n_in, n_out, n_tok = 256, 96, 4096
    # correlated inputs with a few outlier features, as in real activations
    A = torch.randn(n_in, n_in, device=dev) / math.sqrt(n_in)
    X = torch.randn(n_tok, n_in, device=dev) @ (torch.eye(n_in, device=dev) + 2 * A)
    X[:, :4] *= 8
    W = torch.randn(n_out, n_in, device=dev) / math.sqrt(n_in)
    acc = HessianAccumulator(n_in, dev)
    for chunk in X.split(1000):
        acc.add(chunk)
    assert torch.allclose(acc.H, 2 * X.double().T @ X.double() / n_tok, rtol=1e-9, atol=1e-9)
    ref = X @ W.T
    for bits, gs, sym, act in [(4, 128, False, False), (4, 32, True, True), (3, 64, False, True),
                               (2, -1, False, False), (8, 64, False, False)]:
        for fmt in ("gptq", "gptq_v2"):
            res = gptq_quantize(W, acc.H, bits, gs, sym, act, checkpoint_format=fmt)
            e_gptq = ((X @ res.dequant.T - ref) ** 2).mean().item()
            e_rtn = ((X @ rtn_quantize(W, bits, gs, sym, fmt).T - ref) ** 2).mean().item()
            t = to_checkpoint_tensors(res, bits, fmt)
            Wd = gptq_pack.dequantize(t["qweight"], t["qzeros"], t["scales"], t["g_idx"], bits, gs, fmt)
            diff = np.abs(Wd.T - res.dequant.cpu().double().numpy()).max()
            print(f"bits={bits} group={gs:4d} sym={sym!s:5} act_order={act!s:5} {fmt:8s}: "
                  f"output MSE gptq={e_gptq:.3e} rtn={e_rtn:.3e} ratio={e_gptq / e_rtn:.3f} "
                  f"packed-vs-internal max|diff|={diff:.1e}")
            assert diff < 1e-6, "packed checkpoint does not reproduce the quantiser's weights"
            assert e_gptq < e_rtn, "GPTQ should beat round-to-nearest on correlated inputs"
            if act:
                g = t["g_idx"]
                assert not np.array_equal(g, np.sort(g)), "act-order g_idx should be permuted"
                assert np.all(np.bincount(g) == (n_in if gs == -1 else gs))
    print("gptq_quantize selftest: OK")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--selftest":
        selftest()
    else:
        print(__doc__)
