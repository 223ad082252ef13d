#!/usr/bin/env python3
"""Float64 numpy reference forward pass for LLaMA checkpoints (GPTQ or dense).

Reads one of our checkpoint folders (config.json, quantize_config.json or
config.json["quantization_config"], one safetensors file or shards with
``model.safetensors.index.json``), dequantises the GPTQ linears with
``gptq_pack.dequantize`` and runs the HF LLaMA math in float64:

  RMSNorm (x / sqrt(mean(x^2) + eps) * w), RoPE in the HF "rotate half"
  layout, causal attention with grouped-query heads, SiLU-gated MLP,
  optional biases on all projections, tied or untied lm_head.

CLI:
  python3 tools/ref_numpy.py DIR 1,450,2,...          # JSON logits of the last position
  python3 tools/ref_numpy.py DIR 1,450,2 --all        # JSON logits of every position
  python3 tools/ref_numpy.py DIR 1,450,2 --greedy 16  # greedy continuation + margins
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.dont_write_bytecode = True  # keep tools/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gptq_pack  # noqa: E402

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def load_config(ckpt_dir: str) -> Tuple[dict, Optional[dict]]:
    """Return (config.json, quantisation settings or None)."""
    with open(os.path.join(ckpt_dir, "config.json")) as f:
        cfg = json.load(f)
    qpath = os.path.join(ckpt_dir, "quantize_config.json")
    q = None
    if os.path.exists(qpath):
        with open(qpath) as f:
            q = json.load(f)
    elif isinstance(cfg.get("quantization_config"), dict):
        q = dict(cfg["quantization_config"])
        if q.get("quant_method", "gptq") != "gptq":
            raise ValueError(f"unsupported quant_method {q.get('quant_method')!r}")
    if q is not None:
        q.setdefault("checkpoint_format", "gptq")
        q.setdefault("group_size", -1)
    return cfg, q


def rope_theta_of(cfg: dict) -> float:
    if "rope_theta" in cfg:
        return float(cfg["rope_theta"])
    rp = cfg.get("rope_parameters")
    if isinstance(rp, dict) and "rope_theta" in rp:
        return float(rp["rope_theta"])
    return 10000.0


def load_raw_tensors(ckpt_dir: str) -> Dict[str, np.ndarray]:
    idx = os.path.join(ckpt_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        out: Dict[str, np.ndarray] = {}
        for fname in sorted(set(wm.values())):
            part = gptq_pack.read_safetensors(os.path.join(ckpt_dir, fname))
            for k, v in part.items():
                if wm.get(k) != fname:
                    raise ValueError(f"{k} found in {fname} but the index says {wm.get(k)}")
                out[k] = v
        missing = set(wm) - set(out)
        if missing:
            raise ValueError(f"tensors listed in the index but missing: {sorted(missing)[:5]}")
        return out
    files = sorted(glob.glob(os.path.join(ckpt_dir, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no .safetensors file in {ckpt_dir}")
    out = {}
    for fn in files:
        for k, v in gptq_pack.read_safetensors(fn).items():
            if k in out:
                raise ValueError(f"duplicate tensor {k}")
            out[k] = v
    return out


def dequantised_state_dict(ckpt_dir: str, dtype=np.float64) -> Tuple[dict, Dict[str, np.ndarray]]:
    """HF-style state dict (linear weights [out, in]) with GPTQ linears dequantised.

    Returns (config.json dict, tensors). ``lm_head.weight`` is always present
    (a copy of the embeddings when tied). Stray rotary ``inv_freq`` tensors are dropped.
    """
    cfg, q = load_config(ckpt_dir)
    raw = load_raw_tensors(ckpt_dir)
    sd: Dict[str, np.ndarray] = {}
    used = set()
    n_layers = int(cfg["num_hidden_layers"])
    for i in range(n_layers):
        for lin in LINEARS:
            p = f"model.layers.{i}.{lin}"
            if p + ".qweight" in raw:
                if q is None:
                    raise ValueError(f"{p} is quantised but there is no quantisation config")
                g_idx = raw.get(p + ".g_idx")
                w = gptq_pack.dequantize(raw[p + ".qweight"], raw[p + ".qzeros"], raw[p + ".scales"],
                                         None if g_idx is None else np.asarray(g_idx),
                                         int(q["bits"]), int(q["group_size"]),
                                         q.get("checkpoint_format", "gptq"), dtype=np.float64)
                sd[p + ".weight"] = np.ascontiguousarray(w.T).astype(dtype)
                used.update(p + s for s in (".qweight", ".qzeros", ".scales", ".g_idx"))
            elif p + ".weight" in raw:
                sd[p + ".weight"] = np.asarray(raw[p + ".weight"]).astype(dtype)
                used.add(p + ".weight")
            else:
                raise KeyError(f"no weights for {p}")
            if p + ".bias" in raw:
                sd[p + ".bias"] = np.asarray(raw[p + ".bias"]).astype(dtype)
                used.add(p + ".bias")
        for nrm in ("input_layernorm", "post_attention_layernorm"):
            k = f"model.layers.{i}.{nrm}.weight"
            sd[k] = np.asarray(raw[k]).astype(dtype)
            used.add(k)
    for k in ("model.embed_tokens.weight", "model.norm.weight"):
        sd[k] = np.asarray(raw[k]).astype(dtype)
        used.add(k)
    tied = bool(cfg.get("tie_word_embeddings", False))
    if "lm_head.weight" in raw and not tied:
        sd["lm_head.weight"] = np.asarray(raw["lm_head.weight"]).astype(dtype)
        used.add("lm_head.weight")
    elif tied:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
        used.add("lm_head.weight")
    else:
        raise KeyError("lm_head.weight missing and tie_word_embeddings is false")
    leftovers = [k for k in raw if k not in used and not k.endswith("rotary_emb.inv_freq")]
    if leftovers:
        raise ValueError(f"unused tensors in checkpoint: {leftovers[:8]}")
    return cfg, sd


class RefLlama:
    """Float64 LLaMA forward over an HF-style state dict."""

    def __init__(self, cfg: dict, sd: Dict[str, np.ndarray]):
        self.cfg = cfg
        self.sd = {k: np.asarray(v, dtype=np.float64) for k, v in sd.items()}
        self.hidden = int(cfg["hidden_size"])
        self.n_layers = int(cfg["num_hidden_layers"])
        self.n_heads = int(cfg["num_attention_heads"])
        self.n_kv = int(cfg.get("num_key_value_heads") or self.n_heads)
        self.head_dim = int(cfg.get("head_dim") or self.hidden // self.n_heads)
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.theta = rope_theta_of(cfg)
        if cfg.get("rope_scaling"):
            raise NotImplementedError("rope_scaling is not supported by the reference")
        if cfg.get("hidden_act", "silu") != "silu":
            raise NotImplementedError(f"hidden_act {cfg.get('hidden_act')}")
        # pre-transpose linears to [in, out]
        self.wt = {}
        for i in range(self.n_layers):
            for lin in LINEARS:
                p = f"model.layers.{i}.{lin}"
                self.wt[p] = (np.ascontiguousarray(self.sd[p + ".weight"].T), self.sd.get(p + ".bias"))
        self.lm_head_t = np.ascontiguousarray(self.sd["lm_head.weight"].T)

    @classmethod
    def from_dir(cls, ckpt_dir: str) -> "RefLlama":
        cfg, sd = dequantised_state_dict(ckpt_dir)
        return cls(cfg, sd)

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def _lin(self, p: str, x: np.ndarray) -> np.ndarray:
        w, b = self.wt[p]
        y = x @ w
        return y if b is None else y + b

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        # x: [heads, T, d]
        d = self.head_dim
        inv_freq = 1.0 / (self.theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
        ang = pos[:, None].astype(np.float64) * inv_freq[None, :]
        emb = np.concatenate([ang, ang], axis=-1)
        cos, sin = np.cos(emb), np.sin(emb)
        half = d // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rot * sin

    def forward(self, ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        T = ids.shape[0]
        pos = np.arange(T)
        x = self.sd["model.embed_tokens.weight"][ids]
        H, KV, D = self.n_heads, self.n_kv, self.head_dim
        rep = H // KV
        mask = np.triu(np.full((T, T), -np.inf), k=1)
        for i in range(self.n_layers):
            pre = f"model.layers.{i}."
            h = self._rms(x, self.sd[pre + "input_layernorm.weight"])
            q = self._lin(pre + "self_attn.q_proj", h).reshape(T, H, D).transpose(1, 0, 2)
            k = self._lin(pre + "self_attn.k_proj", h).reshape(T, KV, D).transpose(1, 0, 2)
            v = self._lin(pre + "self_attn.v_proj", h).reshape(T, KV, D).transpose(1, 0, 2)
            q = self._rope(q, pos)
            k = self._rope(k, pos)
            k = np.repeat(k, rep, axis=0)  # head h uses kv head h // rep
            v = np.repeat(v, rep, axis=0)
            s = q @ k.transpose(0, 2, 1) / np.sqrt(D) + mask
            s = s - s.max(axis=-1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=-1, keepdims=True)
            a = (p @ v).transpose(1, 0, 2).reshape(T, H * D)
            x = x + self._lin(pre + "self_attn.o_proj", a)
            h = self._rms(x, self.sd[pre + "post_attention_layernorm.weight"])
            g = self._lin(pre + "mlp.gate_proj", h)
            u = self._lin(pre + "mlp.up_proj", h)
            x = x + self._lin(pre + "mlp.down_proj", g / (1.0 + np.exp(-g)) * u)
        x = self._rms(x, self.sd["model.norm.weight"])
        return x @ self.lm_head_t

    def greedy(self, ids: Sequence[int], n: int) -> Tuple[List[int], List[float]]:
        """n argmax steps (full recompute, no EOS stop). Returns (tokens, top1-top2 margins)."""
        seq = list(int(t) for t in ids)
        toks, margins = [], []
        for _ in range(n):
            last = self.forward(seq)[-1]
            top2 = np.argsort(last)[-2:]
            t = int(top2[-1])
            toks.append(t)
            margins.append(float(last[top2[-1]] - last[top2[-2]]))
            seq.append(t)
        return toks, margins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("ids", help="comma-separated token ids, e.g. 1,450,2")
    ap.add_argument("--all", action="store_true", help="print logits of every position")
    ap.add_argument("--greedy", type=int, default=0, help="print N greedy tokens instead of logits")
    a = ap.parse_args()
    ids = [int(t) for t in a.ids.split(",") if t.strip()]
    m = RefLlama.from_dir(a.dir)
    if a.greedy:
        toks, margins = m.greedy(ids, a.greedy)
        print(json.dumps({"greedy": toks, "margins": margins}))
        return
    logits = m.forward(ids)
    print(json.dumps(logits.tolist() if a.all else logits[-1].tolist()))


if __name__ == "__main__":
    main()
