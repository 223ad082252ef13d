//! Tokenizer errors and robustness (a module of tests/tokenizer.rs): missing, truncated and
//! malformed files, ids out of range, sharing across threads, arbitrary input.

use super::*;

#[test]
fn missing_files() {
    let dir = temp_dir("missing");
    let err = Tokenizer::from_json_file(&dir.join("tokenizer.json"), None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Io);
    assert!(err.message.contains("tokenizer.json"));
    let err = Tokenizer::from_sentencepiece_file(&dir.join("tokenizer.model"), None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Io);
    assert!(err.message.contains("tokenizer.model"));
    let err = Tokenizer::from_sentencepiece_file(
        &tok_dir().join("tokenizer.model"),
        Some(&dir.join("tokenizer_config.json")),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Io);
    let err = Tokenizer::from_dir(&dir.join("does-not-exist")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::ModelFormat);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn truncated_and_garbage_models() {
    let dir = temp_dir("corrupt");
    let good = std::fs::read(tok_dir().join("tokenizer.model")).unwrap();
    let path = dir.join("tokenizer.model");
    let check = |bytes: &[u8], what: &str| {
        std::fs::write(&path, bytes).unwrap();
        let err = Tokenizer::from_sentencepiece_file(&path, None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ModelFormat, "{what}: {}", err.message);
        assert!(
            err.message.contains(&path.display().to_string()),
            "{what}: {}",
            err.message
        );
    };
    // Truncations: inside the first piece, mid-vocabulary, at piece boundaries, inside the
    // trainer spec, just before the normaliser spec, one byte short.
    let mut cuts = vec![
        0,
        1,
        2,
        5,
        16,
        1000,
        250_000,
        good.len() - 1,
        good.len() - 10,
        good.len() - 20,
    ];
    let mut boundaries = Vec::new();
    let mut pos = 0;
    while pos < good.len() {
        boundaries.push(pos);
        pos += 2 + good[pos + 1] as usize; // each piece message here is shorter than 128 bytes
        if good[pos..].first() != Some(&0x0a) {
            break;
        }
    }
    cuts.extend(boundaries.iter().step_by(4001));
    cuts.push(pos); // after the last piece, before the trainer spec
    cuts.push(pos + 100); // inside the trainer spec
    for cut in cuts {
        check(&good[..cut], &format!("truncated at {cut}"));
    }
    check(
        b"this is not a sentencepiece model, just some text\n",
        "text",
    );
    check(b"{\"model\": \"json\"}", "json");
    // Pseudo-random garbage, and the real file with a corrupted middle.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for n in [1usize, 7, 64, 4096] {
        let garbage: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        check(&garbage, &format!("{n} random bytes"));
    }
    let mut corrupt = good.clone();
    for b in &mut corrupt[1000..1100] {
        *b = 0xff;
    }
    check(&corrupt, "corrupted middle");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn malformed_tokenizer_json() {
    let dir = temp_dir("badjson");
    let path = dir.join("tokenizer.json");
    let good = std::fs::read(tok_dir().join("tokenizer.json")).unwrap();
    let bad_inputs: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"not json at all".to_vec(),
        b"{\"version\": \"1.0\"}".to_vec(),
        b"[]".to_vec(),
        vec![0xff, 0xfe, 0x00],
        good[..good.len() / 2].to_vec(),
        String::from_utf8_lossy(&good)
            .replace("\"BPE\"", "\"Nope\"")
            .into_bytes(),
    ];
    for (i, bytes) in bad_inputs.iter().enumerate() {
        std::fs::write(&path, bytes).unwrap();
        let err = Tokenizer::from_json_file(&path, None).unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::ModelFormat,
            "case {i}: {}",
            err.message
        );
        assert!(
            err.message.contains("tokenizer.json"),
            "case {i}: {}",
            err.message
        );
        let err = Tokenizer::from_dir(&dir).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ModelFormat, "case {i}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn out_of_range_ids() {
    for (route, tok) in both() {
        for id in [32000, 40000, u32::MAX] {
            let err = tok.decode(&[15043, id]).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{route}");
            let mut s = tok.stream();
            assert_eq!(s.push(15043).unwrap(), "Hello");
            assert_eq!(
                s.push(id).unwrap_err().kind,
                ErrorKind::InvalidArgument,
                "{route}"
            );
            // The failed push changed nothing.
            assert_eq!(s.push(3186).unwrap(), " world");
            assert_eq!(tok.id_to_piece(id), None);
        }
    }
}

#[test]
fn shared_across_threads() {
    let tok = spm_tok();
    let expected: Vec<Vec<u32>> = cases().iter().map(|c| c.ids_bos.clone()).collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for (c, want) in cases().iter().zip(&expected) {
                    assert_eq!(&tok.encode(&c.text, true).unwrap(), want);
                }
            });
        }
    });
}

#[test]
fn arbitrary_input_does_not_panic() {
    let tok = spm_tok();
    let mut x: u64 = 12345;
    for _ in 0..200 {
        let len = (x % 40) as usize;
        let mut text = String::new();
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = char::from_u32((x % 0x11_0000) as u32).unwrap_or('\u{FFFD}');
            text.push(c);
        }
        let ids = tok.encode(&text, true).unwrap();
        let back = tok.decode(&ids).unwrap();
        assert_eq!(back, text.replace('\u{2581}', " "));
        let random_ids: Vec<u32> = ids
            .iter()
            .map(|&i| (i.wrapping_mul(7919) ^ (x as u32)) % 32000)
            .collect();
        let full = tok.decode(&random_ids).unwrap();
        assert_eq!(stream_pieces(tok, &random_ids).concat(), full);
    }
}
