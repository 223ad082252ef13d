#!/usr/bin/env python3
"""Regenerate tests/fixtures/tokenizer_golden.json, the reference data for tests/tokenizer.rs.

Reference implementations (pip install tokenizers sentencepiece protobuf):
  * HF `tokenizers` on tests/fixtures/tokenizer/tokenizer.json  -> "ids", "ids_bos", "decode"
  * `sentencepiece` on tests/fixtures/tokenizer/tokenizer.model -> "spm_ids", "spm_ids_bos",
    "spm_decode" (null for strings that contain special-token text such as "</s>": HF matches
    those as special tokens, SentencePiece treats them as plain characters).

Extra sections:
  * "decode_cases": raw id sequences (byte-fallback runs that are valid, incomplete or invalid,
    special tokens in odd places) with both references' decodes and which one wv follows
    ("expect": "hf" or "spm"; wv follows HF everywhere except inside an invalid byte-fallback
    run, where it follows SentencePiece: each byte that is not part of a valid UTF-8 character
    becomes one U+FFFD and the valid characters of the run are kept).
  * "remove_extra_whitespaces": SentencePiece ids for the same model with
    normalizer_spec.remove_extra_whitespaces patched to true.
  * "non_legacy": HF ids for the `legacy: false` conversion of the same model (no normalizer,
    Metaspace pre-tokenizer with prepend_scheme "first"), as transformers' LlamaConverter builds it.

Usage: python3 tools/make_tokenizer_golden.py   (from the repository root or anywhere)
"""
import json
import os
import random
import sys

from tokenizers import Tokenizer
import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer_golden.json")

SPECIAL_TEXT = ("<s>", "</s>", "<unk>")

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

rng = random.Random(1234)
RANDOM_WORD = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(600))

STRINGS = [
    # empty / whitespace
    "",
    " ",
    "   ",
    "\n",
    "\t",
    " Hello",
    "  two leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "a  b   c    d     e",
    "tab\tseparated\tvalues",
    "\t\tleading tabs",
    "line1\nline2\n",
    "\n\n\nmany newlines",
    "windows\r\nline endings\r\n",
    "  \n  mixed whitespace \t \n",
    "trailing newline\n",
    # plain text
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "«quotes» “curly” ‘single’ — dash – en…",
    # digits
    "1234567890",
    "3.14159 2.71828 -42 +7 1e10 0x1F",
    "Numbers: 1,000,000 and 2024-05-17T12:34:56Z",
    # code
    "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n",
    "fn main() {\n\tprintln!(\"{}\", 1 + 2);\n}\n",
    "<html><body class=\"x\">&amp;&lt;</body></html>",
    '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
    "SELECT * FROM users WHERE id = 42; -- comment",
    # Latin with diacritics, combining marks
    "Ünïcödé àccents çà et là",
    "Grüße aus München",
    "naïve café résumé",
    "e\u0301 vs \u00e9",
    "a\u0308\u0301\u0327 stacked marks",
    "Tiếng Việt có dấu",
    "ǅ ǈ ǋ titlecase, ﬁ ﬀ ligatures",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ１２３",
    # other scripts
    "Καλημέρα κόσμε",
    "Привет, мир! Как дела?",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "क्षत्रिय",
    "สวัสดีชาวโลก",
    "你好，世界！",
    "我们今天去公园散步，天气非常好。",
    "こんにちは世界、カタカナとひらがな",
    "안녕하세요 세계",
    "𠜎𠜱𠝹𠱓 rare CJK extension B",
    "mixed 中文 and English and 日本語 123",
    # emoji
    "😀",
    "I love 🦀 and 🐍!",
    "👨\u200d👩\u200d👧\u200d👦",
    "👩🏽\u200d💻 coder",
    "🇺🇸🇯🇵 flags",
    "1\ufe0f\u20e3 #\ufe0f\u20e3 keycaps",
    "❤\ufe0f",
    "Emoji sequence 🏳\ufe0f\u200d🌈 rainbow flag",
    "Ελληνικά + русский + 🧑\u200d🚀",
    # symbols, odd code points, byte fallback
    "∀x∈ℝ: x² ≥ 0 ⇒ √(x²) = |x|",
    "€£¥₹ ©®™ §¶ †‡",
    "\u0000null and \u0001\u0002 control bytes\u007f",
    "\u200b zero width space \ufeff BOM",
    "\u00a0non-breaking\u00a0space",
    "U+FFFD replacement char: \ufffd",
    "private use \ue000\U000f0000",
    "<0x41> literal byte-token text",
    "▁ literal metaspace ▁▁",
    # long words
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 300,
    "supercalifragilisticexpialidocious" * 10,
    RANDOM_WORD,
    # special-token text
    "Hello</s>world",
    "<s>Hello</s>",
    "A </s> B <s> C",
    "<unk> token text",
    "</s>",
    "<s>",
    "<<s>> </s</s>>",
    "</S> is not special",
    # Vicuna prompts
    VICUNA_SYSTEM + " USER: Hello, who are you? ASSISTANT:",
    VICUNA_SYSTEM + " USER: Hi ASSISTANT: Hello! How can I help?</s>USER: Tell me a joke. ASSISTANT:",
    VICUNA_SYSTEM + " USER: 写一首关于秋天的诗 ASSISTANT:",
    "USER: What is 2+2?\nASSISTANT: 4</s>",
]


def byte_id(b):
    return 3 + b


def main():
    hf = Tokenizer.from_file(os.path.join(FIX, "tokenizer.json"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(FIX, "tokenizer.model"))
    assert sp.bos_id() == 1 and sp.eos_id() == 2 and sp.unk_id() == 0

    cases = []
    disagreements = 0
    for s in STRINGS:
        ids = hf.encode(s, add_special_tokens=False).ids
        ids_bos = hf.encode(s, add_special_tokens=True).ids
        dec = hf.decode(ids, skip_special_tokens=True)
        case = {"text": s, "ids": ids, "ids_bos": ids_bos, "decode": dec}
        if any(t in s for t in SPECIAL_TEXT):
            case.update({"spm_ids": None, "spm_ids_bos": None, "spm_decode": None})
        else:
            sids = sp.encode(s)
            sids_bos = sp.encode(s, add_bos=True)
            sdec = sp.decode(sids)
            case.update({"spm_ids": sids, "spm_ids_bos": sids_bos, "spm_decode": sdec})
            if sids != ids or sids_bos != ids_bos or sdec != dec:
                disagreements += 1
                print("HF/SPM disagree on", repr(s), ids, sids, repr(dec), repr(sdec), file=sys.stderr)
        cases.append(case)

    # Raw id sequences for decode / streaming.
    hello = hf.encode("Hello", add_special_tokens=False).ids
    world = hf.encode("world", add_special_tokens=False).ids
    euro = [byte_id(b) for b in "€".encode()]
    crab = [byte_id(b) for b in "🦀".encode()]
    raw = [
        ("valid 3-byte run", euro, "hf"),
        ("valid run then text", crab + world, "hf"),
        ("text then valid run", hello + crab, "hf"),
        ("incomplete run at end", euro[:2], "spm"),
        ("incomplete run then text", euro[:2] + world, "spm"),
        ("valid run then stray lead byte", euro + [byte_id(0xE2)], "spm"),
        ("lone continuation byte", [byte_id(0x80)], "spm"),
        ("invalid byte 0xFF between text", hello + [byte_id(0xFF)] + world, "spm"),
        ("overlong encoding", [byte_id(0xC0), byte_id(0xAF)], "spm"),
        ("surrogate encoding", [byte_id(0xED), byte_id(0xA0), byte_id(0x80)], "spm"),
        ("lead byte then ascii byte", [byte_id(0xE2), byte_id(0x41)], "spm"),
        ("byte space first", [byte_id(0x20)] + world, "hf"),
        ("metaspace token first", [29871] + world, "hf"),
        ("bos eos around text", [1] + hello + [2], "hf"),
        ("eos inside byte run", [euro[0], 2, euro[1], euro[2]], "hf"),
        ("unk alone", [0], "hf"),
        ("only specials", [1, 2, 1], "hf"),
        ("many spaces", [29871, 29871, 29871] + hello, "hf"),
    ]
    decode_cases = []
    for name, ids, expect in raw:
        decode_cases.append(
            {
                "name": name,
                "ids": ids,
                "hf_decode": hf.decode(ids, skip_special_tokens=True),
                "spm_decode": sp.decode(ids),
                "expect": expect,
            }
        )

    # remove_extra_whitespaces = true variant of the same model.
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    with open(os.path.join(FIX, "tokenizer.model"), "rb") as f:
        proto.ParseFromString(f.read())
    assert not proto.normalizer_spec.remove_extra_whitespaces
    proto.normalizer_spec.remove_extra_whitespaces = True
    sp_rew = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    rew_strings = [
        "",
        "   ",
        " Hello",
        "  two leading spaces",
        "trailing spaces   ",
        "a  b   c    d     e",
        "  \n  mixed whitespace \t \n",
        "tab\tseparated\tvalues",
        "Hello world",
        "你好， 世界！  ",
    ]
    rew = [{"text": s, "spm_ids": sp_rew.encode(s), "spm_decode": sp_rew.decode(sp_rew.encode(s))} for s in rew_strings]

    # legacy = false conversion of the same model.
    with open(os.path.join(FIX, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tj["normalizer"] = None
    tj["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    hf_nl = Tokenizer.from_str(json.dumps(tj))
    nl_strings = [
        "",
        "Hello world",
        " Hello",
        "Hello</s>world",
        "<s>Hello</s> there",
        "A </s> B <s> C",
        "USER: Hi ASSISTANT: Hello!</s>USER: again ASSISTANT:",
        "a  b",
    ]
    non_legacy = [{"text": s, "ids": hf_nl.encode(s, add_special_tokens=False).ids} for s in nl_strings]

    golden = {
        "generator": "tools/make_tokenizer_golden.py",
        "reference": {
            "tokenizers": __import__("tokenizers").__version__,
            "sentencepiece": spm.__version__,
        },
        "cases": cases,
        "decode_cases": decode_cases,
        "remove_extra_whitespaces": rew,
        "non_legacy": non_legacy,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} strings ({disagreements} HF/SPM disagreements), "
          f"{len(decode_cases)} decode cases", file=sys.stderr)
    if disagreements:
        sys.exit(1)


if __name__ == "__main__":
    main()
