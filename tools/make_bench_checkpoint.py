#!/usr/bin/env python3
"""Write a random-weight GPTQ checkpoint with the real LLaMA-13B shapes (for benchmarks).

  python3 tools/make_bench_checkpoint.py OUT_DIR            # ~7.26 GB, 13B shapes
  python3 tools/make_bench_checkpoint.py OUT_DIR --layers 2 # smaller, same per-layer shapes

Shapes (defaults): hidden 5120, 40 layers, 40 heads, FFN 13824, vocab 32000; 4-bit,
group 128, desc_act false, sym true, checkpoint_format gptq (v1); one ``model.safetensors``
with fp16 embeddings / lm_head (untied) / norms, int32 qweight / qzeros / g_idx and fp16
scales, plus config.json, quantize_config.json, generation_config.json and copies of the
tokenizer files from tests/fixtures/tokenizer.

The file is streamed tensor by tensor (header first, then data), so memory stays at a few
hundred MB.  qweight words are uniformly random int32; scales are ~0.01 (uniform 0.008-0.012);
zero points are 7..9 (stored as zero-1); g_idx = k // 128 (``--act-order``: a random
permutation of it, shared by the matrices that share an input); norms ~ 1.  Every tensor has
its own seed, so the output is reproducible.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.dont_write_bytecode = True  # keep tools/ free of __pycache__
sys.path.insert(0, TOOLS)
import gptq_pack  # noqa: E402

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=5120)
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--heads", type=int, default=40)
    ap.add_argument("--ffn", type=int, default=13824)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--act-order", action="store_true",
                    help="desc_act true: each g_idx a random permutation of k // group (q, k, v "
                         "share one, as do gate and up: GPTQ orders by the shared input)")
    ap.add_argument("--tokenizer-dir", default=os.path.join(REPO, "tests", "fixtures", "tokenizer"))
    a = ap.parse_args()

    H, F, V, bits, gs = a.hidden, a.ffn, a.vocab, a.bits, a.group
    if bits not in (2, 4, 8):
        raise SystemExit("bench writer supports 2/4/8 bits (whole values per word)")
    per_word = 32 // bits
    maxq = (1 << bits) - 1
    shapes = {"self_attn.q_proj": (H, H), "self_attn.k_proj": (H, H), "self_attn.v_proj": (H, H),
              "self_attn.o_proj": (H, H), "mlp.gate_proj": (H, F), "mlp.up_proj": (H, F),
              "mlp.down_proj": (F, H)}  # (in, out)
    for lin, (i, o) in shapes.items():
        if i % gs or i % 32 or o % 32:
            raise SystemExit(f"{lin}: shape {(i, o)} not compatible with group {gs} / 32-bit packing")

    # ---- declare every tensor (name, dtype, shape) in file order, with a generator for each
    specs = []
    gens = {}

    def normal_f16(shape, std, seed, rows_per_chunk=2048):
        def gen():
            rng = np.random.default_rng(seed)
            for r0 in range(0, shape[0], rows_per_chunk):
                r = min(rows_per_chunk, shape[0] - r0)
                yield (rng.standard_normal((r,) + tuple(shape[1:]), dtype=np.float32) * std).astype(np.float16)
        return gen

    def norm_f16(n, seed):
        def gen():
            rng = np.random.default_rng(seed)
            yield (1.0 + 0.05 * rng.standard_normal(n)).astype(np.float16)
        return gen

    def rand_i32(shape, seed, rows_per_chunk=256):
        def gen():
            rng = np.random.default_rng(seed)
            for r0 in range(0, shape[0], rows_per_chunk):
                r = min(rows_per_chunk, shape[0] - r0)
                yield np.frombuffer(rng.bytes(r * shape[1] * 4), dtype="<i4").reshape(r, shape[1])
        return gen

    def qzeros_gen(groups, out, seed):
        def gen():
            rng = np.random.default_rng(seed)
            mid = (maxq + 1) // 2  # the symmetric zero point; vary it by +-1
            z = rng.integers(max(1, mid - 1), min(maxq, mid + 1) + 1, size=(groups, out))
            yield gptq_pack.pack_qzeros(z, bits, "gptq")
        return gen

    def scales_gen(groups, out, seed):
        def gen():
            rng = np.random.default_rng(seed)
            yield rng.uniform(0.008, 0.012, size=(groups, out)).astype(np.float16)
        return gen

    def gidx_gen(n, seed=None):
        def gen():
            g = (np.arange(n) // gs).astype(np.int32)
            if seed is not None:
                perm = np.random.default_rng(seed).permutation(n)
                out = np.empty_like(g)
                out[perm] = g
                g = out
            yield g
        return gen

    # Act-order: one permutation per layer input (q|k|v, o, gate|up, down).
    SHARED = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in",
              "gate_proj": "mlp_in", "up_proj": "mlp_in"}

    seed = [a.seed * 1000003]

    def add(name, dtype, shape, gen):
        specs.append((name, dtype, shape))
        gens[name] = gen
        seed[0] += 1

    add("model.embed_tokens.weight", "F16", (V, H), normal_f16((V, H), 0.02, seed[0]))
    for l in range(a.layers):
        p = f"model.layers.{l}."
        add(p + "input_layernorm.weight", "F16", (H,), norm_f16(H, seed[0]))
        for lin in LINEARS:
            i, o = shapes[lin]
            g = i // gs
            add(p + lin + ".qweight", "I32", (i // per_word, o), rand_i32((i // per_word, o), seed[0]))
            add(p + lin + ".qzeros", "I32", (g, o // per_word), qzeros_gen(g, o, seed[0]))
            add(p + lin + ".scales", "F16", (g, o), scales_gen(g, o, seed[0]))
            if a.act_order:
                key = SHARED.get(lin.split(".")[-1], lin)
                pseed = (a.seed * 7919 + l * 101 + sum(map(ord, key))) % (2 ** 32)
                add(p + lin + ".g_idx", "I32", (i,), gidx_gen(i, pseed))
            else:
                add(p + lin + ".g_idx", "I32", (i,), gidx_gen(i))
        add(p + "post_attention_layernorm.weight", "F16", (H,), norm_f16(H, seed[0]))
    add("model.norm.weight", "F16", (H,), norm_f16(H, seed[0]))
    add("lm_head.weight", "F16", (V, H), normal_f16((V, H), 0.02, seed[0]))

    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "model.safetensors")
    t0 = time.time()
    with gptq_pack.SafetensorsStreamWriter(path, specs, {"format": "pt"}) as w:
        total = w.total_data
        print(f"writing {path}: {len(specs)} tensors, {total / 1e9:.3f} GB of data", flush=True)
        done = 0
        for k, (name, _, _) in enumerate(specs):
            w.write_chunks(name, gens[name]())
            done += w.sizes[k]
            if name.endswith("post_attention_layernorm.weight") or k == len(specs) - 1:
                el = time.time() - t0
                print(f"  {name.split('.post_')[0] if 'layers' in name else name}: "
                      f"{done / 1e9:.2f}/{total / 1e9:.2f} GB, {el:.0f}s", flush=True)
    size = os.path.getsize(path)
    header, start = gptq_pack.read_safetensors_header(path)
    assert size == start + total, (size, start, total)

    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "hidden_act": "silu", "hidden_size": H, "initializer_range": 0.02, "intermediate_size": F,
        "max_position_embeddings": 2048, "num_attention_heads": a.heads, "num_hidden_layers": a.layers,
        "num_key_value_heads": a.heads, "rms_norm_eps": 1e-6, "rope_scaling": None, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.31.0",
        "use_cache": True, "vocab_size": V,
    }
    qcfg = {"bits": bits, "group_size": gs, "damp_percent": 0.01, "desc_act": bool(a.act_order), "static_groups": False,
            "sym": True, "true_sequential": True, "model_name_or_path": None, "model_file_base_name": "model",
            "quant_method": "gptq", "checkpoint_format": "gptq"}
    gen_cfg = {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
               "transformers_version": "4.31.0"}
    for fn, obj in (("config.json", cfg), ("quantize_config.json", qcfg), ("generation_config.json", gen_cfg)):
        with open(os.path.join(a.out, fn), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    for fn in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        dst = os.path.join(a.out, fn)
        if os.path.lexists(dst):
            os.remove(dst)
        shutil.copyfile(os.path.join(a.tokenizer_dir, fn), dst)
        os.chmod(dst, 0o644)
    print(f"done: {a.out} ({size / 1e9:.3f} GB model.safetensors) in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
