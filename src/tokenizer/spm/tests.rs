//! Unit tests of the SentencePiece reader and converter, on models built with a tiny
//! protobuf writer.

use super::pb::{Reader, Value};
use super::*;

// ---- a tiny protobuf writer for building test models ----
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}
fn put_tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}
fn put_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    put_tag(out, field, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}
fn put_int(out: &mut Vec<u8>, field: u32, v: i64) {
    put_tag(out, field, 0);
    put_varint(out, v as u64);
}
fn put_f32(out: &mut Vec<u8>, field: u32, v: f32) {
    put_tag(out, field, 5);
    out.extend_from_slice(&v.to_le_bytes());
}
fn piece(p: &str, score: f32, kind: i64) -> Vec<u8> {
    let mut m = Vec::new();
    put_bytes(&mut m, 1, p.as_bytes());
    put_f32(&mut m, 2, score);
    if kind != 1 {
        put_int(&mut m, 3, kind);
    }
    m
}

/// A small BPE model: <unk>, <s>, </s>, ▁, a, b, ab, ▁ab.
fn tiny_model(model_type: i64, norm_extra: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (p, s, k) in [
        ("<unk>", 0.0, 2),
        ("<s>", 0.0, 3),
        ("</s>", 0.0, 3),
        ("\u{2581}", -1.0, 1),
        ("a", -2.0, 1),
        ("b", -3.0, 1),
        ("ab", -0.5, 1),
        ("\u{2581}ab", -0.7, 1),
    ] {
        put_bytes(&mut out, 1, &piece(p, s, k));
    }
    let mut trainer = Vec::new();
    put_int(&mut trainer, 3, model_type);
    put_int(&mut trainer, 43, -1); // pad_id = -1, a 10-byte varint
    put_bytes(&mut out, 2, &trainer);
    let mut norm = Vec::new();
    put_bytes(&mut norm, 1, b"identity");
    put_int(&mut norm, 4, 0);
    norm.extend_from_slice(norm_extra);
    put_bytes(&mut out, 3, &norm);
    out
}

#[test]
fn varints() {
    let mut buf = Vec::new();
    for v in [
        0u64,
        1,
        127,
        128,
        300,
        16384,
        u32::MAX as u64,
        u64::MAX,
        (-1i64) as u64,
    ] {
        buf.clear();
        put_varint(&mut buf, v);
        assert_eq!(Reader::new(&buf).read_varint(), Ok(v));
    }
    assert_eq!(pb::as_i32((-1i64) as u64), -1);
    assert_eq!(pb::as_i32(5), 5);
    // truncated
    assert!(Reader::new(&[0x80, 0x80]).read_varint().is_err());
    assert!(Reader::new(&[]).read_varint().is_err());
    // 10th byte > 1 overflows; 11 bytes is too long
    assert!(
        Reader::new(&[0xff; 9].iter().copied().chain([0x02]).collect::<Vec<_>>())
            .read_varint()
            .is_err()
    );
    assert!(Reader::new(&[0x80; 11]).read_varint().is_err());
}

#[test]
fn fields_of_every_wire_type() {
    let mut buf = Vec::new();
    put_int(&mut buf, 1, 150);
    put_tag(&mut buf, 2, 1);
    buf.extend_from_slice(&7u64.to_le_bytes());
    put_bytes(&mut buf, 3, b"hi");
    put_f32(&mut buf, 4, 1.5);
    let mut r = Reader::new(&buf);
    assert_eq!(
        r.next_field().unwrap().map(|f| (f.0, f.1)),
        Some((1, Value::Varint(150)))
    );
    assert_eq!(
        r.next_field().unwrap().map(|f| (f.0, f.1)),
        Some((2, Value::Fixed64(7)))
    );
    assert_eq!(
        r.next_field().unwrap().map(|f| (f.0, f.1)),
        Some((3, Value::Bytes(b"hi")))
    );
    assert_eq!(
        r.next_field().unwrap().map(|f| (f.0, f.1)),
        Some((4, Value::Fixed32(1.5f32.to_bits())))
    );
    assert_eq!(r.next_field().unwrap(), None);
}

#[test]
fn malformed_fields() {
    // length beyond the end
    assert!(Reader::new(&[0x0a, 0x05, b'a']).next_field().is_err());
    // fixed64 / fixed32 cut short
    assert!(Reader::new(&[0x09, 1, 2, 3]).next_field().is_err());
    assert!(Reader::new(&[0x0d, 1, 2]).next_field().is_err());
    // groups, invalid wire types, field 0
    assert!(Reader::new(&[0x0b]).next_field().is_err());
    assert!(Reader::new(&[0x0c]).next_field().is_err());
    assert!(Reader::new(&[0x0e]).next_field().is_err());
    assert!(Reader::new(&[0x0f]).next_field().is_err());
    assert!(Reader::new(&[0x00, 0x00]).next_field().is_err());
    // a huge length does not overflow
    let mut buf = vec![0x0a];
    put_varint(&mut buf, u64::MAX);
    assert!(Reader::new(&buf).next_field().is_err());
}

#[test]
fn parses_tiny_model() {
    let m = SpmModel::parse(&tiny_model(2, &[])).unwrap();
    assert_eq!(m.pieces.len(), 8);
    assert_eq!(m.pieces[0].kind, PieceType::Unknown);
    assert_eq!(m.pieces[1].kind, PieceType::Control);
    assert_eq!(m.pieces[6].piece, "ab");
    assert_eq!(m.pieces[6].score, -0.5);
    let t = m.trainer.clone().unwrap();
    assert_eq!(
        (t.model_type, t.unk_id, t.bos_id, t.eos_id, t.pad_id),
        (2, 0, 1, 2, -1)
    );
    let n = m.normalizer.clone().unwrap();
    assert_eq!(n.name, "identity");
    assert!(n.add_dummy_prefix && !n.remove_extra_whitespaces && n.escape_whitespaces);
    // merges: ab (-0.5) = a+b; ▁ab (-0.7) = ▁+ab
    assert_eq!(m.merges(), vec![(4, 5), (3, 6)]);
    let json = m.to_tokenizer_json(ConvertOptions::default()).unwrap();
    let tok: tokenizers::Tokenizer = json.parse().unwrap();
    let enc = tok.encode("ab ab", false).unwrap();
    assert_eq!(enc.get_ids(), &[7, 7]);
}

#[test]
fn merge_order_ties() {
    // Same score: longer left piece first, then longer right piece, then id order.
    let pieces = [
        ("<unk>", 0.0, 2),
        ("a", -1.0, 1),
        ("b", -1.0, 1),
        ("c", -1.0, 1),
    ]
    .into_iter()
    .chain([
        ("ab", -2.0, 1),
        ("bc", -2.0, 1),
        ("abc", -3.0, 1),
        ("ca", -2.0, 1),
    ])
    .map(|(p, s, k)| SpmPiece {
        piece: p.into(),
        score: s,
        kind: PieceType::from_i32(k).unwrap(),
    })
    .collect();
    let m = SpmModel {
        pieces,
        trainer: Some(TrainerSpec {
            model_type: 2,
            ..Default::default()
        }),
        normalizer: Some(NormalizerSpec::default()),
        denormalizer: None,
    };
    // ab(4)=a+b, bc(5)=b+c, ca(7)=c+a all score -2 (id order); abc: ab+c (len 2) before a+bc.
    assert_eq!(m.merges(), vec![(1, 2), (2, 3), (3, 1), (4, 3), (1, 5)]);
}

#[test]
fn rejects_what_it_cannot_reproduce() {
    let unigram = SpmModel::parse(&tiny_model(1, &[])).unwrap();
    assert!(matches!(
        unigram.to_tokenizer_json(ConvertOptions::default()),
        Err(SpmError::Unsupported(m)) if m.contains("UNIGRAM")
    ));
    let mut charsmap = Vec::new();
    put_bytes(&mut charsmap, 2, &[1, 2, 3, 4]);
    let nfkc = SpmModel::parse(&tiny_model(2, &charsmap)).unwrap();
    assert!(matches!(
        nfkc.to_tokenizer_json(ConvertOptions::default()),
        Err(SpmError::Unsupported(_))
    ));
}

#[test]
fn structural_errors() {
    let good = tiny_model(2, &[]);
    // every proper prefix fails (a cut at a message boundary loses a required spec)
    for cut in 0..good.len() {
        assert!(
            matches!(SpmModel::parse(&good[..cut]), Err(SpmError::Format(_))),
            "prefix of {cut} bytes parsed"
        );
    }
    // duplicate piece
    let mut dup = Vec::new();
    put_bytes(&mut dup, 1, &piece("<unk>", 0.0, 2));
    put_bytes(&mut dup, 1, &piece("a", 0.0, 1));
    put_bytes(&mut dup, 1, &piece("a", 0.0, 1));
    put_bytes(&mut dup, 2, &[0x18, 0x02]);
    put_bytes(&mut dup, 3, &[]);
    let m = SpmModel::parse(&dup).unwrap();
    assert!(matches!(
        m.to_tokenizer_json(ConvertOptions::default()),
        Err(SpmError::Format(_))
    ));
    // unknown piece type, empty piece, bad UTF-8, wrong wire type
    for bad in [piece("x", 0.0, 9), piece("", 0.0, 1), {
        let mut m = Vec::new();
        put_bytes(&mut m, 1, &[0xff, 0xfe]);
        m
    }] {
        let mut buf = Vec::new();
        put_bytes(&mut buf, 1, &bad);
        assert!(matches!(SpmModel::parse(&buf), Err(SpmError::Format(_))));
    }
    let mut buf = Vec::new();
    put_int(&mut buf, 1, 5); // pieces as a varint
    assert!(matches!(SpmModel::parse(&buf), Err(SpmError::Format(_))));
    // unk_id out of range
    let mut m = SpmModel::parse(&good).unwrap();
    if let Some(t) = m.trainer.as_mut() {
        t.unk_id = 100;
    }
    assert!(matches!(
        m.to_tokenizer_json(ConvertOptions::default()),
        Err(SpmError::Format(_))
    ));
}
