//! Tokenizer tests against reference ids from Hugging Face `tokenizers` and `sentencepiece`
//! (tests/fixtures/tokenizer_golden.json, made by tools/make_tokenizer_golden.py).

mod common;
use common::temp_dir;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wv::error::ErrorKind;
use wv::tokenizer::{StreamState, Tokenizer, TokenizerSource};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tok_dir() -> PathBuf {
    fixtures().join("tokenizer")
}

fn golden() -> &'static Value {
    static G: OnceLock<Value> = OnceLock::new();
    G.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("tokenizer_golden.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn json_tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tok_dir();
        Tokenizer::from_json_file(
            &dir.join("tokenizer.json"),
            Some(&dir.join("tokenizer_config.json")),
        )
        .unwrap()
    })
}

fn spm_tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tok_dir();
        Tokenizer::from_sentencepiece_file(
            &dir.join("tokenizer.model"),
            Some(&dir.join("tokenizer_config.json")),
        )
        .unwrap()
    })
}

fn both() -> [(&'static str, &'static Tokenizer); 2] {
    [("json", json_tok()), ("sentencepiece", spm_tok())]
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

struct Case {
    text: String,
    ids: Vec<u32>,
    ids_bos: Vec<u32>,
    decode: String,
    spm_ids: Option<Vec<u32>>,
    spm_ids_bos: Option<Vec<u32>>,
    spm_decode: Option<String>,
}

fn cases() -> Vec<Case> {
    golden()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: ids_of(&c["ids"]),
            ids_bos: ids_of(&c["ids_bos"]),
            decode: c["decode"].as_str().unwrap().to_string(),
            spm_ids: (!c["spm_ids"].is_null()).then(|| ids_of(&c["spm_ids"])),
            spm_ids_bos: (!c["spm_ids_bos"].is_null()).then(|| ids_of(&c["spm_ids_bos"])),
            spm_decode: c["spm_decode"].as_str().map(str::to_string),
        })
        .collect()
}

/// Feed ids one by one; returns the pieces (the last one is `finish()`).
fn stream_pieces(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    let mut s = tok.stream();
    let mut pieces: Vec<String> = ids.iter().map(|&id| s.push(id).unwrap()).collect();
    pieces.push(s.finish());
    pieces
}

// ------------------------------------------------------------------------------ golden data

#[test]
fn golden_file_is_complete_and_references_agree() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} golden strings", cases.len());
    let mut compared = 0;
    for c in &cases {
        assert_eq!(c.ids_bos.first(), Some(&1), "{:?}", c.text);
        assert_eq!(&c.ids_bos[1..], &c.ids[..], "{:?}", c.text);
        let has_special_text = ["<s>", "</s>", "<unk>"].iter().any(|t| c.text.contains(t));
        if has_special_text {
            assert!(c.spm_ids.is_none());
            continue;
        }
        compared += 1;
        assert_eq!(
            c.spm_ids.as_ref(),
            Some(&c.ids),
            "HF vs SPM ids for {:?}",
            c.text
        );
        assert_eq!(
            c.spm_ids_bos.as_ref(),
            Some(&c.ids_bos),
            "HF vs SPM ids+BOS for {:?}",
            c.text
        );
        assert_eq!(
            c.spm_decode.as_ref(),
            Some(&c.decode),
            "HF vs SPM decode for {:?}",
            c.text
        );
    }
    assert!(compared >= 50);
    // The golden strings exercise what they claim to.
    let any = |f: &dyn Fn(&Case) -> bool| cases.iter().any(f);
    assert!(any(&|c| c.text.is_empty()));
    assert!(any(&|c| c.text.contains('\u{200d}'))); // ZWJ sequences
    assert!(any(&|c| c.text.contains('\u{0301}'))); // combining marks
    assert!(any(&|c| c.text.contains("</s>")));
    assert!(any(&|c| c.text.contains("ASSISTANT:")));
    assert!(any(&|c| c.ids.iter().any(|&id| (3..259).contains(&id)))); // byte fallback
}

#[test]
fn both_routes_encode_like_the_reference() {
    for (route, tok) in both() {
        for c in cases() {
            assert_eq!(
                tok.encode(&c.text, false).unwrap(),
                c.ids,
                "{route}: {:?}",
                c.text
            );
            assert_eq!(
                tok.encode(&c.text, true).unwrap(),
                c.ids_bos,
                "{route}+BOS: {:?}",
                c.text
            );
        }
    }
}

#[test]
fn both_routes_decode_like_the_reference() {
    for (route, tok) in both() {
        for c in cases() {
            assert_eq!(
                tok.decode(&c.ids).unwrap(),
                c.decode,
                "{route}: {:?}",
                c.text
            );
            assert_eq!(
                tok.decode(&c.ids_bos).unwrap(),
                c.decode,
                "{route}+BOS: {:?}",
                c.text
            );
            // Round trip: exact, except that special-token text is dropped and a literal
            // "▁" comes back as a space.
            if c.spm_ids.is_some() && !c.text.contains('\u{2581}') {
                assert_eq!(c.decode, c.text, "{route}");
            }
        }
    }
}

#[test]
fn sentencepiece_route_builds_the_reference_pipeline() {
    let built: Value = serde_json::from_str(&spm_tok().to_json().unwrap()).unwrap();
    let reference: Value = serde_json::from_str(&json_tok().to_json().unwrap()).unwrap();
    assert_eq!(built["model"]["vocab"], reference["model"]["vocab"]);
    assert_eq!(
        built["model"]["merges"], reference["model"]["merges"],
        "merge lists differ"
    );
    assert_eq!(built, reference);
}

#[test]
fn metadata() {
    for (route, tok) in both() {
        assert_eq!(tok.vocab_size(), 32000, "{route}");
        assert_eq!(
            (tok.bos_id(), tok.eos_id(), tok.unk_id()),
            (1, 2, Some(0)),
            "{route}"
        );
        assert!(tok.add_bos() && !tok.add_eos(), "{route}");
        assert_eq!(tok.id_to_piece(1).as_deref(), Some("<s>"));
        assert_eq!(tok.id_to_piece(3).as_deref(), Some("<0x00>"));
        assert_eq!(tok.id_to_piece(15043).as_deref(), Some("\u{2581}Hello"));
        assert_eq!(tok.id_to_piece(32000), None);
        assert_eq!(tok.piece_to_id("</s>"), Some(2));
    }
    for (route, tok) in both() {
        assert!(
            format!("{tok:?}").contains("decode: \"piece table\""),
            "{route}: {tok:?}"
        );
    }
    assert_eq!(json_tok().source(), TokenizerSource::Json);
    assert_eq!(spm_tok().source(), TokenizerSource::SentencePiece);
}

#[test]
fn decode_cases_follow_the_documented_rule() {
    for c in golden()["decode_cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let ids = ids_of(&c["ids"]);
        let expected = match c["expect"].as_str().unwrap() {
            "hf" => c["hf_decode"].as_str().unwrap(),
            "spm" => c["spm_decode"].as_str().unwrap(),
            other => panic!("bad expect {other}"),
        };
        for (route, tok) in both() {
            assert_eq!(tok.decode(&ids).unwrap(), expected, "{route}: {name}");
            assert_eq!(
                stream_pieces(tok, &ids).concat(),
                expected,
                "{route} stream: {name}"
            );
        }
    }
}

// ------------------------------------------------------------------------------ streaming

#[test]
fn stream_concatenation_equals_decode() {
    for (route, tok) in both() {
        for c in cases() {
            for ids in [&c.ids, &c.ids_bos] {
                let pieces = stream_pieces(tok, ids);
                let full = tok.decode(ids).unwrap();
                assert_eq!(pieces.concat(), full, "{route}: {:?}", c.text);
                if !full.contains('\u{FFFD}') {
                    for p in &pieces {
                        assert!(!p.contains('\u{FFFD}'), "{route}: {:?} gave {p:?}", c.text);
                    }
                }
                // The final flush has nothing left for well-formed text.
                assert_eq!(
                    pieces.last().map(String::as_str),
                    Some(""),
                    "{route}: {:?}",
                    c.text
                );
            }
        }
    }
}

#[test]
fn stream_holds_incomplete_characters() {
    for (route, tok) in both() {
        for text in [
            "😀",
            "I love 🦀 and 🐍!",
            "👨\u{200d}👩\u{200d}👧\u{200d}👦",
            "𠜎𠜱",
        ] {
            let ids = tok.encode(text, false).unwrap();
            let mut s = tok.stream();
            let mut held = 0;
            let mut out = String::new();
            for &id in &ids {
                let piece = s.push(id).unwrap();
                let is_byte = tok.id_to_piece(id).is_some_and(|p| p.starts_with("<0x"));
                if is_byte {
                    // A byte token yields text only when it completes a character.
                    if piece.is_empty() {
                        held += 1;
                    } else {
                        assert_eq!(piece.chars().count(), 1, "{route}: {text:?} {piece:?}");
                        assert!(piece.chars().all(|ch| ch.len_utf8() > 1));
                    }
                }
                out.push_str(&piece);
            }
            out.push_str(&s.finish());
            assert!(held > 0, "{route}: {text:?} used no multi-byte fallback");
            assert_eq!(out, text, "{route}");
        }

        // 😀 = F0 9F 98 80: three empty pieces, then the emoji.
        let bytes: Vec<u32> = "😀".bytes().map(|b| 3 + u32::from(b)).collect();
        let mut s = tok.stream();
        let pieces: Vec<String> = bytes.iter().map(|&id| s.push(id).unwrap()).collect();
        assert_eq!(pieces, ["", "", "", "😀"], "{route}");
        assert_eq!(s.finish(), "");

        // An incomplete character at the end becomes U+FFFD per byte, as decode does.
        let mut s = tok.stream();
        assert_eq!(s.push(3 + 0xE2).unwrap(), "");
        assert_eq!(s.push(3 + 0x82).unwrap(), "");
        assert_eq!(s.finish(), "\u{FFFD}\u{FFFD}");
        assert_eq!(
            tok.decode(&[3 + 0xE2, 3 + 0x82]).unwrap(),
            "\u{FFFD}\u{FFFD}"
        );
    }
}

#[test]
fn stream_leading_space_rule_and_reset() {
    let tok = spm_tok();
    let ids = tok.encode("Hello world", false).unwrap();
    let mut s = tok.stream();
    assert_eq!(s.push(ids[0]).unwrap(), "Hello");
    assert_eq!(s.push(ids[1]).unwrap(), " world");
    // finish() does not start a new text ...
    assert_eq!(s.finish(), "");
    assert_eq!(s.push(ids[1]).unwrap(), " world");
    // ... reset() does.
    s.reset();
    assert_eq!(s.push(ids[1]).unwrap(), "world");
    // Specials are invisible and do not count as text.
    s.reset();
    assert_eq!(s.push(1).unwrap(), "");
    assert_eq!(s.push(ids[1]).unwrap(), "world");
    assert_eq!(s.push(2).unwrap(), "");
}

#[test]
fn owned_stream_state() {
    let tok = json_tok();
    let text = "Owned state: 你好 🦀!";
    let ids = tok.encode(text, false).unwrap();
    let mut state: StreamState = tok.stream_state();
    let mut out = String::new();
    for &id in &ids {
        out.push_str(&state.push(tok, id).unwrap());
    }
    out.push_str(&state.finish(tok));
    assert_eq!(out, text);
    // A borrowed decoder can hand its state over.
    let mut d = tok.stream();
    d.push(ids[0]).unwrap();
    let mut state = d.into_state();
    let first = tok.decode(&ids[..1]).unwrap();
    let second = tok.decode(&ids[..2]).unwrap();
    assert_eq!(state.push(tok, ids[1]).unwrap(), second[first.len()..]);
}

#[test]
fn stream_is_linear_time() {
    let tok = json_tok();
    let ids = tok
        .encode(
            &"The quick brown fox jumps over the lazy dog. 🦀 ".repeat(2000),
            false,
        )
        .unwrap();
    assert!(ids.len() > 30_000);
    let start = std::time::Instant::now();
    let out = stream_pieces(tok, &ids).concat();
    let elapsed = start.elapsed();
    assert_eq!(out, tok.decode(&ids).unwrap());
    assert!(
        elapsed.as_secs_f64() < 5.0,
        "streaming {} ids took {elapsed:?}",
        ids.len()
    );
}

/// A tokenizer.json whose decoder is not the exact LLaMA one uses the sliding-window path.
#[test]
fn generic_decoder_uses_the_sliding_window() {
    let dir = temp_dir("generic");
    let text = std::fs::read_to_string(tok_dir().join("tokenizer.json")).unwrap();
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    // Same meaning, different shape: an extra Fuse.
    doc["decoder"]["decoders"]
        .as_array_mut()
        .unwrap()
        .insert(2, serde_json::json!({"type": "Fuse"}));
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, serde_json::to_string(&doc).unwrap()).unwrap();
    let tok = Tokenizer::from_json_file(&path, None).unwrap();
    assert!(
        format!("{tok:?}").contains("decode: \"tokenizers\""),
        "{tok:?}"
    );
    for c in cases() {
        assert_eq!(
            tok.encode(&c.text, true).unwrap(),
            c.ids_bos,
            "{:?}",
            c.text
        );
        assert_eq!(tok.decode(&c.ids).unwrap(), c.decode, "{:?}", c.text);
        let pieces = stream_pieces(&tok, &c.ids);
        assert_eq!(pieces.concat(), c.decode, "{:?}", c.text);
    }
    let ids = tok.encode(&"window ".repeat(500), false).unwrap();
    assert_eq!(
        stream_pieces(&tok, &ids).concat(),
        tok.decode(&ids).unwrap()
    );
    assert_eq!(
        tok.decode(&[40000]).unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        tok.stream().push(40000).unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ------------------------------------------------------------------------------ variants

/// Set `normalizer_spec.remove_extra_whitespaces` (field 3 / field 4) to true in place.
fn patch_remove_extra_whitespaces(model: &mut [u8]) {
    fn varint(b: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[*pos];
            *pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    let mut pos = 0;
    while pos < model.len() {
        let tag = varint(model, &mut pos);
        assert_eq!(tag & 7, 2, "top-level fields are messages");
        let len = varint(model, &mut pos) as usize;
        if tag >> 3 == 3 {
            let end = pos + len;
            let mut p = pos;
            while p < end {
                let tag = varint(model, &mut p);
                match tag & 7 {
                    0 => {
                        let at = p;
                        let v = varint(model, &mut p);
                        if tag >> 3 == 4 {
                            assert_eq!((v, p - at), (0, 1));
                            model[at] = 1;
                            return;
                        }
                    }
                    2 => {
                        let l = varint(model, &mut p) as usize;
                        p += l;
                    }
                    w => panic!("unexpected wire type {w}"),
                }
            }
        }
        pos += len;
    }
    panic!("no remove_extra_whitespaces field");
}

#[test]
fn remove_extra_whitespaces_variant() {
    let dir = temp_dir("rew");
    let mut model = std::fs::read(tok_dir().join("tokenizer.model")).unwrap();
    patch_remove_extra_whitespaces(&mut model);
    let path = dir.join("tokenizer.model");
    std::fs::write(&path, &model).unwrap();
    let tok = Tokenizer::from_sentencepiece_file(&path, None).unwrap();
    let cases = golden()["remove_extra_whitespaces"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let ids = ids_of(&c["spm_ids"]);
        assert_eq!(tok.encode(text, false).unwrap(), ids, "{text:?}");
        assert_eq!(
            tok.decode(&ids).unwrap(),
            c["spm_decode"].as_str().unwrap(),
            "{text:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn non_legacy_variant() {
    let dir = temp_dir("nonlegacy");
    std::fs::copy(
        tok_dir().join("tokenizer.model"),
        dir.join("tokenizer.model"),
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"legacy": false}"#).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.source(), TokenizerSource::SentencePiece);
    for c in golden()["non_legacy"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids_of(&c["ids"]),
            "{text:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

// ------------------------------------------------------------------------------ loading

#[test]
fn from_dir_picks_json_then_model() {
    let tok = Tokenizer::from_dir(&tok_dir()).unwrap();
    assert_eq!(tok.source(), TokenizerSource::Json);

    let dir = temp_dir("spm-only");
    for f in [
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(tok_dir().join(f), dir.join(f)).unwrap();
    }
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.source(), TokenizerSource::SentencePiece);
    assert_eq!(
        tok.encode("Hello world", true).unwrap(),
        vec![1, 15043, 3186]
    );

    let empty = temp_dir("empty");
    let err = Tokenizer::from_dir(&empty).unwrap_err();
    assert_eq!(err.kind, ErrorKind::ModelFormat);
    assert!(
        err.message.contains(&empty.display().to_string()),
        "{}",
        err.message
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(empty);
}

#[test]
fn config_options() {
    let dir = temp_dir("config");
    std::fs::copy(
        tok_dir().join("tokenizer.model"),
        dir.join("tokenizer.model"),
    )
    .unwrap();
    std::fs::copy(tok_dir().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let cfg = dir.join("tokenizer_config.json");
    let hello = [15043, 3186];
    for file in ["tokenizer.json", "tokenizer.model"] {
        let load = |config: &str| {
            std::fs::write(&cfg, config).unwrap();
            if file == "tokenizer.json" {
                Tokenizer::from_json_file(&dir.join(file), Some(&cfg))
            } else {
                Tokenizer::from_sentencepiece_file(&dir.join(file), Some(&cfg))
            }
        };
        let tok = load(r#"{"add_bos_token": false}"#).unwrap();
        assert!(!tok.add_bos());
        assert_eq!(tok.encode("Hello world", true).unwrap(), hello);

        let tok = load(r#"{"add_bos_token": true, "add_eos_token": true}"#).unwrap();
        assert!(tok.add_eos());
        assert_eq!(
            tok.encode("Hello world", true).unwrap(),
            [1, 15043, 3186, 2]
        );
        assert_eq!(tok.encode("Hello world", false).unwrap(), hello);

        // AddedToken objects, nulls and unrelated keys.
        let tok = load(
            r#"{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": {"content": "</s>"},
                "unk_token": "<unk>", "pad_token": null, "add_eos_token": null, "model_max_length": 4096}"#,
        )
        .unwrap();
        assert_eq!((tok.bos_id(), tok.eos_id(), tok.unk_id()), (1, 2, Some(0)));
        assert!(tok.add_bos() && !tok.add_eos());

        // Special tokens may be renamed.
        let tok = load(r#"{"eos_token": "<unk>"}"#).unwrap();
        assert_eq!(tok.eos_id(), 0);

        for bad in [
            "{not json",
            "[1, 2]",
            r#"{"add_bos_token": "yes"}"#,
            r#"{"bos_token": 5}"#,
            r#"{"eos_token": {"text": "</s>"}}"#,
            r#"{"bos_token": "<nope>"}"#,
        ] {
            let err = load(bad).unwrap_err();
            assert_eq!(
                err.kind,
                ErrorKind::ModelFormat,
                "{file} {bad}: {}",
                err.message
            );
            assert!(!err.message.is_empty());
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

// Errors and robustness: tests/tokenizer_errors.
mod tokenizer_errors;
