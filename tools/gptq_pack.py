#!/usr/bin/env python3
"""GPTQ tensor packing, unpacking and dequantisation (numpy only).

Layout (the convention of GPTQ-for-LLaMa / AutoGPTQ "cuda-old" checkpoints):

* ``qweight`` int32 ``[in * bits / 32, out]``.  For every output column ``n``
  the ``in`` quantised values ``q[0, n], q[1, n], ...`` form one continuous
  LSB-first bit stream over the words ``qweight[:, n]``: value ``k`` occupies
  global bits ``k*bits .. k*bits+bits-1`` where global bit ``p`` is bit
  ``p % 32`` of word ``p // 32``.  For 2/4/8 bits no value crosses a word; for
  3 bits, 32 values fill exactly 3 words and values 10 and 21 of each such
  block straddle two words (value 10: bits 30-31 of word 0 + bit 0 of word 1;
  value 21: bit 31 of word 1 + bits 0-1 of word 2).
* ``qzeros`` int32 ``[groups, out * bits / 32]``: the same bit stream, but along
  the output dimension (row ``g`` packs the zeros of group ``g`` for all
  output columns).  Checkpoint format ``gptq`` (v1) stores ``(zero - 1)``
  masked to ``bits`` bits and readers add 1 back (so a zero of 0 cannot be
  represented in v1); ``gptq_v2`` stores the zero itself.
* ``scales`` ``[groups, out]`` (fp16, sometimes fp32), ``g_idx`` int32 ``[in]``
  (group of each input row; absent means ``k // group_size``).
* Dequantisation: ``W[k, n] = scales[g[k], n] * (q[k, n] - zero[g[k], n])``
  with ``zero = stored + 1`` for v1 and ``zero = stored`` for v2; a layer
  computes ``y = x @ W (+ bias)`` with ``W`` of shape ``[in, out]``.

This module also contains a tiny safetensors reader/writer (numpy only; the
writer can stream tensor by tensor) used by the other tools.

Run ``python3 tools/gptq_pack.py --selftest`` to check the packer.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

SUPPORTED_BITS = (2, 3, 4, 8)
FORMATS = ("gptq", "gptq_v2")


# ---------------------------------------------------------------------------
# bit packing
# ---------------------------------------------------------------------------

def _check_bits(bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"unsupported bit width {bits}; expected one of {SUPPORTED_BITS}")


def _period(bits: int) -> Tuple[int, int]:
    """(values, words) of the smallest repeating block of the bit stream."""
    g = math.gcd(32, bits)
    values = 32 // g
    words = bits // g
    return values, words


def pack_rows(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``values[K, N]`` (ints in ``[0, 2**bits)``) along axis 0.

    Returns int32 ``[K * bits / 32, N]``: column ``n`` is the LSB-first bit
    stream of ``values[:, n]``.
    """
    _check_bits(bits)
    v = np.asarray(values)
    if v.ndim == 1:
        v = v[:, None]
        squeeze = True
    else:
        squeeze = False
    if v.ndim != 2:
        raise ValueError("pack_rows expects a 1-D or 2-D array")
    k, n = v.shape
    if (k * bits) % 32 != 0:
        raise ValueError(f"{k} values of {bits} bits do not fill whole 32-bit words")
    mask = (1 << bits) - 1
    vi = v.astype(np.int64)
    if vi.size and (vi.min() < 0 or vi.max() > mask):
        raise ValueError(f"values out of range for {bits} bits: [{vi.min()}, {vi.max()}]")
    pv, pw = _period(bits)
    blocks = k // pv
    vb = vi.astype(np.uint64).reshape(blocks, pv, n)
    out = np.zeros((blocks, pw + 1, n), dtype=np.uint64)  # one spare word for carries
    for j in range(pv):
        pos = j * bits
        w, s = divmod(pos, 32)
        shifted = vb[:, j, :] << np.uint64(s)  # < 2**40, fits easily
        out[:, w, :] |= shifted & np.uint64(0xFFFFFFFF)
        out[:, w + 1, :] |= shifted >> np.uint64(32)
    if np.any(out[:, pw, :]):
        raise AssertionError("bit stream overflowed its block (internal error)")
    packed = out[:, :pw, :].reshape(blocks * pw, n).astype(np.uint32).view(np.int32)
    return packed[:, 0] if squeeze else packed


def unpack_rows(packed: np.ndarray, bits: int, k: Optional[int] = None) -> np.ndarray:
    """Inverse of :func:`pack_rows`: int32 ``[K*bits/32, N]`` -> int32 ``[K, N]``."""
    _check_bits(bits)
    p = np.asarray(packed)
    squeeze = p.ndim == 1
    if squeeze:
        p = p[:, None]
    words, n = p.shape
    if k is None:
        if (words * 32) % bits != 0:
            raise ValueError("cannot infer the number of values")
        k = words * 32 // bits
    if k * bits != words * 32:
        raise ValueError(f"{words} words cannot hold exactly {k} values of {bits} bits")
    pv, pw = _period(bits)
    blocks = k // pv
    u = p.astype(np.int64) & 0xFFFFFFFF  # reinterpret int32 as uint32
    u = u.astype(np.uint64).reshape(blocks, pw, n)
    u = np.concatenate([u, np.zeros((blocks, 1, n), dtype=np.uint64)], axis=1)
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((blocks, pv, n), dtype=np.int32)
    for j in range(pv):
        pos = j * bits
        w, s = divmod(pos, 32)
        both = u[:, w, :] | (u[:, w + 1, :] << np.uint64(32))
        out[:, j, :] = ((both >> np.uint64(s)) & mask).astype(np.int32)
    res = out.reshape(k, n)
    return res[:, 0] if squeeze else res


def pack_qweight(intweight: np.ndarray, bits: int) -> np.ndarray:
    """``intweight[in, out]`` -> ``qweight`` int32 ``[in*bits/32, out]``."""
    return pack_rows(intweight, bits)


def unpack_qweight(qweight: np.ndarray, bits: int, in_features: Optional[int] = None) -> np.ndarray:
    """``qweight`` -> int32 ``[in, out]``."""
    return unpack_rows(qweight, bits, in_features)


def store_zeros(zeros: np.ndarray, bits: int, fmt: str) -> np.ndarray:
    """Convert real zero points to the values stored in the checkpoint."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint_format {fmt!r}")
    z = np.asarray(zeros).astype(np.int64)
    maxq = (1 << bits) - 1
    if z.size and (z.min() < 0 or z.max() > maxq):
        raise ValueError(f"zero points out of range [0, {maxq}]")
    if fmt == "gptq":
        if z.size and z.min() == 0:
            raise ValueError("gptq (v1) cannot represent a zero point of 0 (stored as -1); clamp zeros to >= 1")
        z = (z - 1) & maxq
    return z


def pack_qzeros(zeros: np.ndarray, bits: int, fmt: str = "gptq") -> np.ndarray:
    """Real zero points ``[groups, out]`` -> ``qzeros`` int32 ``[groups, out*bits/32]``."""
    stored = store_zeros(zeros, bits, fmt)
    return np.ascontiguousarray(pack_rows(stored.T, bits).T)


def unpack_qzeros(qzeros: np.ndarray, bits: int, out_features: Optional[int] = None,
                  fmt: str = "gptq") -> np.ndarray:
    """``qzeros`` -> real zero points int32 ``[groups, out]`` (v1: stored + 1, not masked)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint_format {fmt!r}")
    stored = np.ascontiguousarray(unpack_rows(np.asarray(qzeros).T, bits, out_features).T)
    return stored + 1 if fmt == "gptq" else stored


def default_g_idx(in_features: int, group_size: int) -> np.ndarray:
    gs = in_features if group_size in (-1, 0, None) else group_size
    return (np.arange(in_features) // gs).astype(np.int32)


def num_groups(in_features: int, group_size: int) -> int:
    gs = in_features if group_size in (-1, 0, None) else group_size
    return -(-in_features // gs)


def dequantize(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray,
               g_idx: Optional[np.ndarray], bits: int, group_size: int,
               fmt: str = "gptq", dtype=np.float64) -> np.ndarray:
    """Dequantise a GPTQ linear to ``W[in, out]`` (so that ``y = x @ W``)."""
    q = unpack_qweight(qweight, bits).astype(np.int64)
    in_features, out_features = q.shape
    z = unpack_qzeros(qzeros, bits, out_features, fmt).astype(np.int64)
    s = np.asarray(scales).astype(dtype)
    if g_idx is None:
        g = default_g_idx(in_features, group_size)
    else:
        g = np.asarray(g_idx).astype(np.int64)
    if g.shape != (in_features,):
        raise ValueError(f"g_idx has shape {g.shape}, expected ({in_features},)")
    if g.min() < 0 or g.max() >= s.shape[0]:
        raise ValueError("g_idx refers to a group that does not exist")
    return (s[g, :] * (q - z[g, :]).astype(dtype)).astype(dtype)


# ---------------------------------------------------------------------------
# safetensors (numpy only)
# ---------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
    "BF16": np.dtype("<u2"),  # returned raw; see _bf16_to_f32
}
_NP_TO_ST = {
    np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("float16"): "F16",
    np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("int16"): "I16",
    np.dtype("int8"): "I8", np.dtype("uint8"): "U8", np.dtype("bool"): "BOOL",
}


def st_dtype_of(arr_or_dtype) -> str:
    dt = np.dtype(getattr(arr_or_dtype, "dtype", arr_or_dtype))
    dt = dt.newbyteorder("=") if dt.byteorder not in ("=", "|") else dt
    try:
        return _NP_TO_ST[np.dtype(dt.name)]
    except KeyError:
        raise ValueError(f"dtype {dt} not supported in safetensors writer")


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors_header(path: str) -> Tuple[dict, int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    return header, 8 + n


def read_safetensors(path: str, names: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
    """Read tensors (memory-mapped, read-only views; BF16 is converted to float32)."""
    header, data_start = read_safetensors_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    wanted = None if names is None else set(names)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if wanted is not None and name not in wanted:
            continue
        dt = _ST_DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        shape = tuple(info["shape"])
        raw = mm[data_start + b:data_start + e]
        arr = raw.view(dt).reshape(shape)
        if info["dtype"] == "BF16":
            arr = _bf16_to_f32(arr)
        out[name] = arr
    return out


class SafetensorsStreamWriter:
    """Write a safetensors file tensor by tensor.

    ``specs`` is a list of ``(name, st_dtype, shape)`` in the order in which
    the data will be written; the header (with all offsets) is written first,
    then each call of :meth:`write` appends one tensor's bytes.
    """

    def __init__(self, path: str, specs: Sequence[Tuple[str, str, Sequence[int]]],
                 metadata: Optional[Dict[str, str]] = None):
        self.path = path
        self.specs = [(n, d, tuple(int(x) for x in s)) for n, d, s in specs]
        header: Dict[str, object] = {}
        if metadata is not None:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        off = 0
        self.sizes = []
        for name, dt, shape in self.specs:
            if name in header:
                raise ValueError(f"duplicate tensor {name}")
            nbytes = _ST_DTYPES[dt].itemsize * int(np.prod(shape, dtype=np.int64))
            header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + nbytes]}
            self.sizes.append(nbytes)
            off += nbytes
        self.total_data = off
        hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
        pad = (-(8 + len(hjson))) % 8
        hjson += b" " * pad
        self.f = open(path, "wb")
        self.f.write(struct.pack("<Q", len(hjson)))
        self.f.write(hjson)
        self.idx = 0

    def write(self, name: str, arr: np.ndarray) -> None:
        exp_name, dt, shape = self.specs[self.idx]
        if name != exp_name:
            raise ValueError(f"expected tensor {exp_name}, got {name}")
        a = np.asarray(arr)
        if tuple(a.shape) != shape:
            raise ValueError(f"{name}: shape {a.shape} != declared {shape}")
        if st_dtype_of(a) != dt:
            raise ValueError(f"{name}: dtype {a.dtype} != declared {dt}")
        a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))
        data = a.tobytes()
        if len(data) != self.sizes[self.idx]:
            raise AssertionError("size mismatch")
        self.f.write(data)
        self.idx += 1

    def write_raw(self, name: str, data: bytes) -> None:
        exp_name, _, _ = self.specs[self.idx]
        if name != exp_name:
            raise ValueError(f"expected tensor {exp_name}, got {name}")
        if len(data) != self.sizes[self.idx]:
            raise ValueError(f"{name}: {len(data)} bytes != declared {self.sizes[self.idx]}")
        self.f.write(data)
        self.idx += 1

    def write_chunks(self, name: str, chunks: Iterable[np.ndarray]) -> None:
        """Write one tensor from several row chunks (for tensors too big to hold at once)."""
        exp_name, dt, _ = self.specs[self.idx]
        if name != exp_name:
            raise ValueError(f"expected tensor {exp_name}, got {name}")
        n = 0
        for c in chunks:
            c = np.ascontiguousarray(np.asarray(c))
            if st_dtype_of(c) != dt:
                raise ValueError(f"{name}: chunk dtype {c.dtype} != declared {dt}")
            data = c.astype(c.dtype.newbyteorder("<"), copy=False).tobytes()
            self.f.write(data)
            n += len(data)
        if n != self.sizes[self.idx]:
            raise ValueError(f"{name}: wrote {n} bytes, declared {self.sizes[self.idx]}")
        self.idx += 1

    def close(self) -> None:
        if self.idx != len(self.specs):
            self.f.close()
            raise ValueError(f"only {self.idx} of {len(self.specs)} tensors were written")
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.f.close()


def write_safetensors(path: str, tensors: Sequence[Tuple[str, np.ndarray]],
                      metadata: Optional[Dict[str, str]] = None) -> int:
    """Write ``[(name, array), ...]`` in the given order. Returns the data size."""
    specs = [(n, st_dtype_of(a), np.asarray(a).shape) for n, a in tensors]
    with SafetensorsStreamWriter(path, specs, metadata) as w:
        for n, a in tensors:
            w.write(n, a)
        total = w.total_data
    return total


# ---------------------------------------------------------------------------
# self test
# ---------------------------------------------------------------------------

def _bit(words: np.ndarray, p: int) -> int:
    return (int(words[p // 32]) & 0xFFFFFFFF) >> (p % 32) & 1


def selftest(verbose: bool = True) -> None:
    rng = np.random.default_rng(1234)
    # 1. round trips for random shapes
    for bits in SUPPORTED_BITS:
        pv, _ = _period(bits)
        for _ in range(20):
            k = pv * int(rng.integers(1, 9)) * (1 if bits == 3 else int(rng.integers(1, 5)))
            n = int(rng.integers(1, 70))
            v = rng.integers(0, 1 << bits, size=(k, n))
            p = pack_rows(v, bits)
            assert p.dtype == np.int32 and p.shape == (k * bits // 32, n), (p.shape, k, n, bits)
            assert np.array_equal(unpack_rows(p, bits, k), v), f"roundtrip failed bits={bits}"
            # bit-stream definition, checked bit by bit on a few columns
            for col in range(min(n, 3)):
                for kk in range(k):
                    for b in range(bits):
                        assert _bit(p[:, col], kk * bits + b) == (int(v[kk, col]) >> b) & 1
        # qzeros round trip (along the output dimension), both formats
        for fmt in FORMATS:
            g = int(rng.integers(1, 6))
            n = pv * int(rng.integers(1, 5))
            lo = 1 if fmt == "gptq" else 0
            z = rng.integers(lo, 1 << bits, size=(g, n))
            qz = pack_qzeros(z, bits, fmt)
            assert qz.shape == (g, n * bits // 32)
            assert np.array_equal(unpack_qzeros(qz, bits, n, fmt), z)
    # 2. AutoGPTQ / GPTQ-for-LLaMa conventions, spelled out
    # 4-bit: value at k=1, n=0 sits in bits 4..7 of qweight[0, 0]; k=8 starts word 1.
    v = np.zeros((16, 2), dtype=np.int64)
    v[1, 0] = 0xA
    v[8, 0] = 0x3
    v[7, 1] = 0xF
    p = pack_qweight(v, 4)
    assert (int(p[0, 0]) & 0xFFFFFFFF) == 0xA0, hex(int(p[0, 0]))
    assert (int(p[1, 0]) & 0xFFFFFFFF) == 0x3
    assert (int(p[0, 1]) & 0xFFFFFFFF) == 0xF0000000 and p[0, 1] < 0  # sign bit set -> negative int32
    # 4-bit qzeros (v1 stores zero-1): zero of column n=1 is in bits 4..7 of qzeros[g, 0]
    z = np.full((1, 8), 8)
    z[0, 1] = 13
    qz = pack_qzeros(z, 4, "gptq")
    assert (int(qz[0, 0]) & 0xFFFFFFFF) == 0x777777C7, hex(int(qz[0, 0]) & 0xFFFFFFFF)
    assert (int(pack_qzeros(z, 4, "gptq_v2")[0, 0]) & 0xFFFFFFFF) == 0x888888D8
    # 2-bit: value k=3 in bits 6..7; 8-bit: value k=2 in bits 16..23
    v = np.zeros((16, 1), dtype=np.int64); v[3, 0] = 2
    assert int(pack_qweight(v, 2)[0, 0]) == 2 << 6
    v = np.zeros((4, 1), dtype=np.int64); v[2, 0] = 0xAB
    assert int(pack_qweight(v, 8)[0, 0]) == 0xAB << 16
    # 3-bit, 32 values in 3 words (AutoGPTQ QuantLinear.pack):
    #   values 0..9 -> word0 bits 3j; value 10 -> word0 bits 30,31 (low 2 bits) + word1 bit 0 (high bit)
    #   values 11..20 -> word1 bits 3(j-11)+1; value 21 -> word1 bit 31 (low bit) + word2 bits 0,1
    #   values 22..31 -> word2 bits 3(j-22)+2
    v = np.zeros((32, 1), dtype=np.int64)
    v[10, 0] = 0b101
    v[21, 0] = 0b110
    v[0, 0] = 0b011
    v[11, 0] = 0b111
    v[22, 0] = 0b001
    v[31, 0] = 0b100
    p = pack_qweight(v, 3)[:, 0].astype(np.int64) & 0xFFFFFFFF
    w0 = 0b011 | (0b01 << 30)               # value 0 and the low 2 bits of value 10
    w1 = 0b1 | (0b111 << 1) | (0b0 << 31)   # high bit of value 10, value 11, low bit of value 21 (0)
    w2 = 0b11 | (0b001 << 2) | (0b100 << 29)  # high 2 bits of value 21, value 22, value 31
    assert list(p) == [w0, w1, w2], [hex(x) for x in p]
    # emulate AutoGPTQ's 3-bit unpack (shifts per word + the two straddling fix-ups)
    v = rng.integers(0, 8, size=(64, 5))
    p = pack_qweight(v, 3).astype(np.int64) & 0xFFFFFFFF
    rec = np.zeros_like(v)
    for blk in range(2):
        w = p[3 * blk:3 * blk + 3]
        for j in range(10):
            rec[32 * blk + j] = (w[0] >> (3 * j)) & 7
            rec[32 * blk + 11 + j] = (w[1] >> (3 * j + 1)) & 7
            rec[32 * blk + 22 + j] = (w[2] >> (3 * j + 2)) & 7
        rec[32 * blk + 10] = ((w[0] >> 30) & 3) | ((w[1] << 2) & 4)
        rec[32 * blk + 21] = ((w[1] >> 31) & 1) | ((w[2] << 1) & 6)
    assert np.array_equal(rec, v)
    # 3. dequantisation (v1 and v2, with and without g_idx)
    k, n, gs, bits = 64, 16, 16, 4
    q = rng.integers(0, 16, size=(k, n))
    zr = rng.integers(1, 16, size=(k // gs, n))
    s = rng.uniform(0.01, 0.02, size=(k // gs, n)).astype(np.float16)
    gi = rng.permutation(np.repeat(np.arange(k // gs), gs)).astype(np.int32)
    ref = s.astype(np.float64)[gi] * (q - zr[gi])
    for fmt in FORMATS:
        w = dequantize(pack_qweight(q, bits), pack_qzeros(zr, bits, fmt), s, gi, bits, gs, fmt)
        assert np.allclose(w, ref, rtol=0, atol=0)
    ref2 = s.astype(np.float64)[np.arange(k) // gs] * (q - zr[np.arange(k) // gs])
    w = dequantize(pack_qweight(q, bits), pack_qzeros(zr, bits), s, None, bits, gs)
    assert np.array_equal(w, ref2)
    # 4. safetensors writer/reader round trip
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.safetensors")
        ts = [("a", rng.standard_normal((3, 5)).astype(np.float16)),
              ("b", rng.integers(-5, 5, size=(7,)).astype(np.int32)),
              ("c", rng.standard_normal((2, 2)).astype(np.float32))]
        write_safetensors(path, ts, {"format": "pt"})
        back = read_safetensors(path)
        for nme, a in ts:
            assert back[nme].dtype == a.dtype and np.array_equal(back[nme], a)
        try:
            from safetensors.numpy import load_file  # optional cross-check
            lib = load_file(path)
            for nme, a in ts:
                assert np.array_equal(lib[nme], a)
        except ImportError:
            pass
    if verbose:
        print("gptq_pack selftest: OK (bits 2,3,4,8 round trips; AutoGPTQ layout checks; dequant; safetensors)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--selftest":
        selftest()
    else:
        print(__doc__)
