//! SentencePiece `tokenizer.model` reader and its conversion to a `tokenizers` pipeline.
//!
//! The file is a protobuf `ModelProto` (sentencepiece_model.proto). We read it with a minimal
//! protobuf wire-format reader ([`pb`]) instead of a protobuf crate: only the fields that
//! decide how text is tokenized are kept, everything else is skipped.
//!
//! [`SpmModel::to_tokenizer_json`] then writes the `tokenizer.json` that Hugging Face's
//! `LlamaConverter` (transformers' `convert_slow_tokenizer`) would write for the same model:
//! vocab = the pieces, merges derived from the vocab and ordered by score, byte fallback, the
//! `Prepend("▁")` + `Replace(" ", "▁")` normaliser and the Replace/ByteFallback/Fuse/Strip
//! decoder. For the LLaMA model this text loads into a tokenizer identical to the reference
//! `tokenizer.json` (same vocab, same merge list in the same order, same pipeline).

use serde_json::{json, Map, Value};
use std::collections::HashMap;

pub(crate) mod pb;

/// SentencePiece piece types (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PieceType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl PieceType {
    fn from_i32(v: i32) -> Option<PieceType> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpmPiece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// `NormalizerSpec`, with the protobuf defaults.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NormalizerSpec {
    pub name: String,
    pub precompiled_charsmap_len: usize,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        NormalizerSpec {
            name: String::new(),
            precompiled_charsmap_len: 0,
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// The parts of `TrainerSpec` that matter at inference time, with the protobuf defaults.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrainerSpec {
    /// 1 UNIGRAM (default), 2 BPE, 3 WORD, 4 CHAR.
    pub model_type: i32,
    pub byte_fallback: bool,
    pub treat_whitespace_as_suffix: bool,
    pub unk_id: i32,
    pub bos_id: i32,
    pub eos_id: i32,
    pub pad_id: i32,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        TrainerSpec {
            model_type: 1,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
        }
    }
}

/// A parsed SentencePiece `ModelProto`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpmModel {
    pub pieces: Vec<SpmPiece>,
    pub trainer: Option<TrainerSpec>,
    pub normalizer: Option<NormalizerSpec>,
    pub denormalizer: Option<NormalizerSpec>,
}

/// How the converted pipeline treats the text; the `tokenizer_config.json` settings that
/// transformers' `LlamaConverter` reads (`legacy`, `add_prefix_space`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvertOptions {
    /// `legacy: true` (the default; what Vicuna ships): `Prepend("▁")` + `Replace` normaliser,
    /// so every text segment between special tokens gets a dummy prefix. `false`: no normaliser
    /// and a `Metaspace(prepend_scheme = "first")` pre-tokenizer.
    pub legacy: bool,
    /// `add_prefix_space` (default true); combined with the model's `add_dummy_prefix`.
    pub add_prefix_space: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            legacy: true,
            add_prefix_space: true,
        }
    }
}

/// Why a model could not be used: the bytes are not a valid model (`Format`), or they are
/// but describe something we do not implement (`Unsupported`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SpmError {
    Format(String),
    Unsupported(String),
}

fn fmt_err<T>(msg: impl Into<String>) -> Result<T, SpmError> {
    Err(SpmError::Format(msg.into()))
}

fn wrong_type<T>(what: &str, v: &pb::Value<'_>, at: usize) -> Result<T, SpmError> {
    fmt_err(format!(
        "{what} at byte {at} has wire type {}",
        v.wire_name()
    ))
}

fn varint(what: &str, v: pb::Value<'_>, at: usize) -> Result<u64, SpmError> {
    match v {
        pb::Value::Varint(x) => Ok(x),
        other => wrong_type(what, &other, at),
    }
}

fn bytes<'a>(what: &str, v: pb::Value<'a>, at: usize) -> Result<&'a [u8], SpmError> {
    match v {
        pb::Value::Bytes(b) => Ok(b),
        other => wrong_type(what, &other, at),
    }
}

fn string(what: &str, v: pb::Value<'_>, at: usize) -> Result<String, SpmError> {
    let b = bytes(what, v, at)?;
    match std::str::from_utf8(b) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => fmt_err(format!("{what} at byte {at} is not valid UTF-8")),
    }
}

fn int32(what: &str, v: pb::Value<'_>, at: usize) -> Result<i32, SpmError> {
    let x = varint(what, v, at)?;
    let i = pb::as_i32(x);
    // A valid int32 varint is either a non-negative value below 2^31 or a sign-extended
    // negative one; anything else is not an int32.
    if i64::from(i) as u64 != x {
        return fmt_err(format!("{what} at byte {at} is not a 32-bit integer ({x})"));
    }
    Ok(i)
}

fn boolean(what: &str, v: pb::Value<'_>, at: usize) -> Result<bool, SpmError> {
    Ok(varint(what, v, at)? != 0)
}

fn pb_err(e: String) -> SpmError {
    SpmError::Format(e)
}

fn parse_piece(buf: &[u8], base: usize, index: usize) -> Result<SpmPiece, SpmError> {
    let mut r = pb::Reader::nested(buf, base);
    let mut piece: Option<String> = None;
    let mut score = 0.0f32;
    let mut kind = PieceType::Normal;
    while let Some((field, v, at)) = r.next_field().map_err(pb_err)? {
        match field {
            1 => piece = Some(string("piece string", v, at)?),
            2 => match v {
                pb::Value::Fixed32(bits) => score = f32::from_bits(bits),
                other => return wrong_type("piece score", &other, at),
            },
            3 => {
                let t = int32("piece type", v, at)?;
                kind = PieceType::from_i32(t).ok_or_else(|| {
                    SpmError::Format(format!("piece {index} has unknown type {t}"))
                })?;
            }
            _ => {}
        }
    }
    let piece = match piece {
        Some(p) if !p.is_empty() => p,
        _ => return fmt_err(format!("piece {index} has no text")),
    };
    Ok(SpmPiece { piece, score, kind })
}

fn parse_trainer(spec: &mut TrainerSpec, buf: &[u8], base: usize) -> Result<(), SpmError> {
    let mut r = pb::Reader::nested(buf, base);
    while let Some((field, v, at)) = r.next_field().map_err(pb_err)? {
        match field {
            3 => spec.model_type = int32("trainer_spec.model_type", v, at)?,
            24 => spec.treat_whitespace_as_suffix = boolean("treat_whitespace_as_suffix", v, at)?,
            35 => spec.byte_fallback = boolean("trainer_spec.byte_fallback", v, at)?,
            40 => spec.unk_id = int32("trainer_spec.unk_id", v, at)?,
            41 => spec.bos_id = int32("trainer_spec.bos_id", v, at)?,
            42 => spec.eos_id = int32("trainer_spec.eos_id", v, at)?,
            43 => spec.pad_id = int32("trainer_spec.pad_id", v, at)?,
            _ => {}
        }
    }
    Ok(())
}

fn parse_normalizer(spec: &mut NormalizerSpec, buf: &[u8], base: usize) -> Result<(), SpmError> {
    let mut r = pb::Reader::nested(buf, base);
    while let Some((field, v, at)) = r.next_field().map_err(pb_err)? {
        match field {
            1 => spec.name = string("normalizer_spec.name", v, at)?,
            2 => spec.precompiled_charsmap_len = bytes("precompiled_charsmap", v, at)?.len(),
            3 => spec.add_dummy_prefix = boolean("add_dummy_prefix", v, at)?,
            4 => spec.remove_extra_whitespaces = boolean("remove_extra_whitespaces", v, at)?,
            5 => spec.escape_whitespaces = boolean("escape_whitespaces", v, at)?,
            _ => {}
        }
    }
    Ok(())
}

impl SpmModel {
    /// Parse a `ModelProto`. Only structural problems are reported here (as `Format`);
    /// [`SpmModel::to_tokenizer_json`] decides what is supported.
    pub fn parse(buf: &[u8]) -> Result<SpmModel, SpmError> {
        let mut r = pb::Reader::new(buf);
        let mut pieces = Vec::new();
        let mut trainer: Option<TrainerSpec> = None;
        let mut normalizer: Option<NormalizerSpec> = None;
        let mut denormalizer: Option<NormalizerSpec> = None;
        while let Some((field, v, at)) = r.next_field().map_err(pb_err)? {
            match field {
                1 => {
                    let b = bytes("piece", v, at)?;
                    pieces.push(parse_piece(b, at, pieces.len())?);
                }
                // Non-repeated message fields that occur twice are merged (protobuf rules).
                2 => {
                    let b = bytes("trainer_spec", v, at)?;
                    parse_trainer(trainer.get_or_insert_with(Default::default), b, at)?;
                }
                3 => {
                    let b = bytes("normalizer_spec", v, at)?;
                    parse_normalizer(normalizer.get_or_insert_with(Default::default), b, at)?;
                }
                5 => {
                    let b = bytes("denormalizer_spec", v, at)?;
                    parse_normalizer(denormalizer.get_or_insert_with(Default::default), b, at)?;
                }
                _ => {}
            }
        }
        if pieces.is_empty() {
            return fmt_err("no pieces (not a SentencePiece model?)");
        }
        // A file cut at a message boundary still parses; SentencePiece writes the pieces first
        // and the trainer and normaliser specs last, so require both.
        if trainer.is_none() {
            return fmt_err(format!(
                "no trainer_spec after {} pieces (truncated or not a SentencePiece model)",
                pieces.len()
            ));
        }
        if normalizer.is_none() {
            return fmt_err("no normalizer_spec (truncated or not a SentencePiece model)");
        }
        Ok(SpmModel {
            pieces,
            trainer,
            normalizer,
            denormalizer,
        })
    }

    fn trainer(&self) -> TrainerSpec {
        self.trainer.clone().unwrap_or_default()
    }

    fn normalizer(&self) -> NormalizerSpec {
        self.normalizer.clone().unwrap_or_default()
    }

    /// The id of a special piece named by the trainer spec (`-1` = none); out of range is a
    /// format error.
    fn special_id(&self, what: &str, id: i32) -> Result<Option<u32>, SpmError> {
        if id < 0 {
            return Ok(None);
        }
        if id as usize >= self.pieces.len() {
            return fmt_err(format!(
                "trainer_spec.{what} = {id} but the model has {} pieces",
                self.pieces.len()
            ));
        }
        Ok(Some(id as u32))
    }

    pub fn unk_id(&self) -> Result<Option<u32>, SpmError> {
        self.special_id("unk_id", self.trainer().unk_id)
    }
    pub fn bos_id(&self) -> Result<Option<u32>, SpmError> {
        self.special_id("bos_id", self.trainer().bos_id)
    }
    pub fn eos_id(&self) -> Result<Option<u32>, SpmError> {
        self.special_id("eos_id", self.trainer().eos_id)
    }

    /// Check that the model is one we reproduce exactly (a BPE model with the identity
    /// normaliser) and structurally sound (unique pieces, special ids in range).
    fn validate(&self) -> Result<(), SpmError> {
        let n = self.pieces.len();
        if n > u32::MAX as usize {
            return fmt_err(format!("{n} pieces is too many"));
        }
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(n);
        for (i, p) in self.pieces.iter().enumerate() {
            if let Some(j) = seen.insert(p.piece.as_str(), i) {
                return fmt_err(format!("pieces {j} and {i} are both {:?}", p.piece));
            }
        }
        let unk = self.unk_id()?;
        self.bos_id()?;
        self.eos_id()?;
        let Some(unk) = unk else {
            return fmt_err(
                "trainer_spec.unk_id is negative; SentencePiece requires an unknown piece",
            );
        };
        if self.pieces[unk as usize].kind != PieceType::Unknown {
            return fmt_err(format!(
                "trainer_spec.unk_id = {unk} but piece {unk} ({:?}) is not of type UNKNOWN",
                self.pieces[unk as usize].piece
            ));
        }

        let t = self.trainer();
        if t.model_type != 2 {
            let name = match t.model_type {
                1 => "UNIGRAM".to_string(),
                3 => "WORD".to_string(),
                4 => "CHAR".to_string(),
                other => format!("type {other}"),
            };
            return Err(SpmError::Unsupported(format!(
                "SentencePiece model_type is {name}; only BPE models (LLaMA) are supported"
            )));
        }
        if t.treat_whitespace_as_suffix {
            return Err(SpmError::Unsupported(
                "SentencePiece treat_whitespace_as_suffix = true is not supported".into(),
            ));
        }
        let norm = self.normalizer();
        if norm.precompiled_charsmap_len > 0 {
            return Err(SpmError::Unsupported(format!(
                "SentencePiece normaliser {:?} (a {}-byte precompiled charsmap) is not supported; \
                 only the identity normaliser (LLaMA) is",
                norm.name, norm.precompiled_charsmap_len
            )));
        }
        if !norm.escape_whitespaces {
            return Err(SpmError::Unsupported(
                "SentencePiece normalizer_spec.escape_whitespaces = false is not supported".into(),
            ));
        }
        if let Some(d) = &self.denormalizer {
            if d.precompiled_charsmap_len > 0 {
                return Err(SpmError::Unsupported(format!(
                    "SentencePiece denormaliser {:?} is not supported",
                    d.name
                )));
            }
        }
        Ok(())
    }

    /// Merges derived from the vocab, as transformers' `SentencePieceExtractor` (with
    /// `vocab_scores`) derives them: every split of every piece into two pieces that are both
    /// in the vocab, pieces visited in id order (splits of one piece sorted by the two ids),
    /// then stably sorted by (score of the merged piece, left length, right length), all
    /// descending, lengths counted in code points.
    pub fn merges(&self) -> Vec<(u32, u32)> {
        let vocab: HashMap<&str, u32> = self
            .pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.piece.as_str(), i as u32))
            .collect();
        struct M {
            l: u32,
            r: u32,
            score: f32,
            l_len: usize,
            r_len: usize,
        }
        let norm_score = |s: f32| {
            if s.is_nan() {
                f32::NEG_INFINITY
            } else if s == 0.0 {
                0.0 // -0.0 == 0.0, as in Python
            } else {
                s
            }
        };
        let mut all: Vec<M> = Vec::new();
        let mut local: Vec<M> = Vec::new();
        for p in &self.pieces {
            let s = p.piece.as_str();
            let score = norm_score(p.score);
            for (cut, _) in s.char_indices().skip(1) {
                let (l, r) = s.split_at(cut);
                if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                    local.push(M {
                        l: li,
                        r: ri,
                        score,
                        l_len: l.chars().count(),
                        r_len: r.chars().count(),
                    });
                }
            }
            local.sort_by_key(|m| (m.l, m.r));
            all.append(&mut local);
        }
        // `sort_by` is stable, like Python's `sorted(..., reverse=True)`.
        all.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(b.l_len.cmp(&a.l_len))
                .then(b.r_len.cmp(&a.r_len))
        });
        all.into_iter().map(|m| (m.l, m.r)).collect()
    }

    /// The `tokenizer.json` text of the equivalent Hugging Face pipeline.
    pub fn to_tokenizer_json(&self, opts: ConvertOptions) -> Result<String, SpmError> {
        self.validate()?;
        let t = self.trainer();
        let norm = self.normalizer();
        let piece = |id: u32| self.pieces[id as usize].piece.as_str();
        let unk = self.unk_id()?.map(piece);
        let bos = self.bos_id()?.map(piece);
        let prefix = norm.add_dummy_prefix && opts.add_prefix_space;

        let mut vocab = Map::new();
        for (i, p) in self.pieces.iter().enumerate() {
            vocab.insert(p.piece.clone(), json!(i));
        }
        let merges: Vec<Value> = self
            .merges()
            .into_iter()
            .map(|(l, r)| json!([piece(l), piece(r)]))
            .collect();

        // Unknown and control pieces are special added tokens (skipped when decoding);
        // user-defined pieces are plain added tokens (matched whole in the input).
        let added: Vec<Value> = self
            .pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                matches!(
                    p.kind,
                    PieceType::Unknown | PieceType::Control | PieceType::UserDefined
                )
            })
            .map(|(i, p)| {
                json!({
                    "id": i,
                    "content": p.piece,
                    "single_word": false,
                    "lstrip": false,
                    "rstrip": false,
                    "normalized": false,
                    "special": p.kind != PieceType::UserDefined,
                })
            })
            .collect();

        let mut normalizers: Vec<Value> = Vec::new();
        if norm.remove_extra_whitespaces {
            // SentencePiece drops leading and trailing spaces and collapses runs of spaces
            // (only U+0020 counts with the identity normaliser) before adding the dummy prefix.
            normalizers
                .push(json!({"type": "Replace", "pattern": {"Regex": "^ +| +$"}, "content": ""}));
            normalizers
                .push(json!({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}));
        }
        let mut pre_tokenizer = Value::Null;
        if opts.legacy {
            if prefix {
                normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
            }
            normalizers.push(
                json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
            );
        } else {
            pre_tokenizer = json!({
                "type": "Metaspace",
                "replacement": "\u{2581}",
                "prepend_scheme": if prefix { "first" } else { "never" },
                "split": false,
            });
        }
        let normalizer = if normalizers.is_empty() {
            Value::Null
        } else {
            json!({"type": "Sequence", "normalizers": normalizers})
        };

        let post_processor = match bos {
            Some(bos) => json!({
                "type": "TemplateProcessing",
                "single": [
                    {"SpecialToken": {"id": bos, "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                ],
                "pair": [
                    {"SpecialToken": {"id": bos, "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": bos, "type_id": 1}},
                    {"Sequence": {"id": "B", "type_id": 1}},
                ],
                "special_tokens": {bos: {"id": bos, "ids": [self.bos_id()?], "tokens": [bos]}},
            }),
            None => Value::Null,
        };

        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if prefix {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }

        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": {"type": "Sequence", "decoders": decoders},
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": unk,
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": true,
                "byte_fallback": t.byte_fallback,
                "ignore_merges": false,
                "vocab": vocab,
                "merges": merges,
            },
        });
        serde_json::to_string(&doc)
            .map_err(|e| SpmError::Format(format!("could not write tokenizer.json: {e}")))
    }
}

#[cfg(test)]
mod tests;
