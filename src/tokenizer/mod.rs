//! Tokenizer: LLaMA's SentencePiece BPE, through the `tokenizers` crate.
//!
//! Two routes lead to the same [`Tokenizer`]: a `tokenizer.json` is loaded by the `tokenizers`
//! crate as it is; a `tokenizer.model` (SentencePiece protobuf, what the real Wizard-Vicuna
//! checkpoint ships) is parsed in-process (see `spm`) and turned into the identical
//! `tokenizers` pipeline (Prepend + Replace normaliser, BPE with byte fallback, the
//! Replace/ByteFallback/Fuse/Strip decoder). `stream` turns generated ids into text piece by piece.
//!
//! # Behaviour
//!
//! * **Encoding** is the `tokenizers` pipeline's, with `add_special_tokens = false`; BOS (and
//!   EOS) are then added as `tokenizer_config.json` says (`add_bos_token`, default true;
//!   `add_eos_token`, default false). Special-token text inside the input (`"</s>"`) is matched
//!   as a special token, as the reference `tokenizer.json` does.
//! * **Decoding** skips special tokens and applies SentencePiece's leading-space rule (one
//!   leading space of the whole text is dropped). It equals `tokenizers`' `decode(ids, true)`
//!   with one exception: inside a byte-fallback run that is not valid UTF-8, each byte that is
//!   not part of a valid character becomes one U+FFFD and the valid characters are kept
//!   (SentencePiece's own rule); `tokenizers` turns every byte of such a run into U+FFFD.
//!   That rule is what lets [`StreamDecoder`] emit a character as soon as its last byte
//!   arrives and still agree exactly with [`Tokenizer::decode`].
//!   Skipped tokens include `<unk>` (SentencePiece itself would print " ⁇ "), and a skipped
//!   special token does not interrupt a byte-fallback run.
//! * A `tokenizer.json` whose decoder is not LLaMA's is still supported: decoding goes through
//!   `tokenizers`, and streaming uses a sliding window (see `stream`).
//! * **Streaming**: [`Tokenizer::stream`] gives a [`StreamDecoder`] that borrows the tokenizer;
//!   [`Tokenizer::stream_state`] gives the same machine as an owned [`StreamState`] whose
//!   methods take the tokenizer as an argument (for sessions that own both).
//!
//! # `tokenizer.model` support
//!
//! BPE models (`model_type = BPE`) with the identity normaliser, with or without byte
//! fallback, `add_dummy_prefix` and `remove_extra_whitespaces`. Unigram/word/char models,
//! precompiled (NFKC) normalisers and `treat_whitespace_as_suffix` are `Unsupported`.
//! `tokenizer_config.json`'s `legacy` (default true) and `add_prefix_space` (default true) pick
//! the pipeline variant as transformers' `LlamaConverter` does (for `tokenizer.json` the file
//! itself is authoritative and those keys are ignored).

mod spm;
mod stream;

pub use stream::{StreamDecoder, StreamState};

use crate::error::{Error, ErrorKind, Result};
use serde_json::Value;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Where the tokenizer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerSource {
    /// `tokenizer.json`, loaded by the tokenizers crate.
    Json,
    /// `tokenizer.model`, converted in-process.
    SentencePiece,
}

/// What one id decodes to, for LLaMA's decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// No token has this id.
    Invalid,
    /// A special token: skipped when decoding.
    Skip,
    /// A byte-fallback token `<0xXX>`.
    Byte(u8),
    /// Text, with `▁` already replaced by a space.
    Text(Box<str>),
}

/// A loaded tokenizer. `Send + Sync`; encode and decode take `&self`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: TokenizerSource,
    /// Largest id + 1.
    vocab_size: usize,
    bos_id: u32,
    eos_id: u32,
    unk_id: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// Per-id decode table when the decoder is LLaMA's (both routes, for LLaMA); `None` means
    /// decode through `tokenizers`.
    pieces: Option<Vec<Piece>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("unk_id", &self.unk_id)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field(
                "decode",
                &if self.pieces.is_some() {
                    "piece table"
                } else {
                    "tokenizers"
                },
            )
            .finish_non_exhaustive()
    }
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Tokenizer>();
    send_sync::<StreamState>();
};

/// What `tokenizer_config.json` says.
#[derive(Debug, Clone, Default)]
struct Config {
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    bos: Option<String>,
    eos: Option<String>,
    unk: Option<String>,
    legacy: Option<bool>,
    add_prefix_space: Option<bool>,
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn read_config(path: Option<&Path>) -> Result<Config> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    let bytes = read_file(path)?;
    let bad = |msg: String| Error::format(format!("{}: {msg}", path.display()));
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let Value::Object(map) = v else {
        return Err(bad("expected a JSON object".into()));
    };
    let flag = |key: &str| -> Result<Option<bool>> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(bad(format!("\"{key}\" must be true or false, not {other}"))),
        }
    };
    // A token is a string or an AddedToken object {"content": "..."}.
    let token = |key: &str| -> Result<Option<String>> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Object(o)) => match o.get("content") {
                Some(Value::String(s)) => Ok(Some(s.clone())),
                _ => Err(bad(format!("\"{key}\" object has no string \"content\""))),
            },
            Some(other) => Err(bad(format!(
                "\"{key}\" must be a string or an object, not {other}"
            ))),
        }
    };
    Ok(Config {
        add_bos: flag("add_bos_token")?,
        add_eos: flag("add_eos_token")?,
        bos: token("bos_token")?,
        eos: token("eos_token")?,
        unk: token("unk_token")?,
        legacy: flag("legacy")?,
        add_prefix_space: flag("add_prefix_space")?,
    })
}

/// Run `f`, turning a panic inside the `tokenizers` crate into an error.
fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(Error::internal(format!(
            "the tokenizers crate panicked while {what}"
        ))),
    }
}

/// The decoder of every LLaMA `tokenizer.json`, for which the piece table is exact.
fn is_llama_decoder(decoder: &Value) -> bool {
    let expected = serde_json::json!({
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ]
    });
    *decoder == expected
}

fn byte_piece(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl Tokenizer {
    /// Load from a checkpoint folder: `tokenizer.json` if present, else `tokenizer.model`;
    /// `tokenizer_config.json` (if present) says whether BOS is added.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let config = dir.join("tokenizer_config.json");
        let config = config.is_file().then_some(config);
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Tokenizer::from_json_file(&json, config.as_deref());
        }
        let model = dir.join("tokenizer.model");
        if model.is_file() {
            return Tokenizer::from_sentencepiece_file(&model, config.as_deref());
        }
        Err(Error::format(format!(
            "{}: no tokenizer.json or tokenizer.model in this folder",
            dir.display()
        )))
    }

    /// Load a `tokenizer.json`, with an optional `tokenizer_config.json`.
    pub fn from_json_file(path: &Path, config: Option<&Path>) -> Result<Tokenizer> {
        let config = read_config(config)?;
        let bytes = read_file(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::format(format!("{}: not valid UTF-8", path.display())))?;
        Tokenizer::build(&text, path, TokenizerSource::Json, config, None)
    }

    /// Load a SentencePiece `tokenizer.model`, with an optional `tokenizer_config.json`.
    pub fn from_sentencepiece_file(path: &Path, config: Option<&Path>) -> Result<Tokenizer> {
        let config = read_config(config)?;
        let bytes = read_file(path)?;
        let named = |e: spm::SpmError| match e {
            spm::SpmError::Format(m) => Error::format(format!(
                "{}: invalid SentencePiece model: {m}",
                path.display()
            )),
            spm::SpmError::Unsupported(m) => Error::unsupported(format!("{}: {m}", path.display())),
        };
        let model = spm::SpmModel::parse(&bytes).map_err(named)?;
        let opts = spm::ConvertOptions {
            legacy: config.legacy.unwrap_or(true),
            add_prefix_space: config.add_prefix_space.unwrap_or(true),
        };
        let json = model.to_tokenizer_json(opts).map_err(named)?;
        let ids = (
            model.bos_id().map_err(named)?,
            model.eos_id().map_err(named)?,
            model.unk_id().map_err(named)?,
        );
        Tokenizer::build(
            &json,
            path,
            TokenizerSource::SentencePiece,
            config,
            Some(ids),
        )
    }

    /// `spm_ids`: the (bos, eos, unk) ids the SentencePiece trainer spec names.
    #[allow(clippy::type_complexity)]
    fn build(
        json: &str,
        path: &Path,
        source: TokenizerSource,
        config: Config,
        spm_ids: Option<(Option<u32>, Option<u32>, Option<u32>)>,
    ) -> Result<Tokenizer> {
        let name = path.display();
        let mut inner = guard("loading the tokenizer", || {
            json.parse::<tokenizers::Tokenizer>()
                .map_err(|e| Error::format(format!("{name}: not a valid tokenizer.json: {e}")))
        })?;
        // Never truncate or pad silently.
        inner
            .with_truncation(None)
            .map_err(|e| Error::format(format!("{name}: {e}")))?;
        inner.with_padding(None);

        let vocab = inner.get_vocab(true);
        let vocab_size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        if vocab_size == 0 {
            return Err(Error::format(format!("{name}: the vocabulary is empty")));
        }

        let lookup = |what: &str, token: &str| -> Result<u32> {
            inner.token_to_id(token).ok_or_else(|| {
                Error::format(format!(
                    "{name}: the {what} token {token:?} is not in the vocabulary"
                ))
            })
        };
        let (spm_bos, spm_eos, spm_unk) = spm_ids.unwrap_or((None, None, None));
        let pick = |what: &str, configured: &Option<String>, spm: Option<u32>, default: &str| match (
            configured, spm,
        ) {
            (Some(t), _) => lookup(what, t),
            (None, Some(id)) => Ok(id),
            (None, None) => lookup(what, default),
        };
        let bos_id = pick("BOS", &config.bos, spm_bos, "<s>")?;
        let eos_id = pick("EOS", &config.eos, spm_eos, "</s>")?;
        let unk_id = match (&config.unk, spm_unk) {
            (Some(t), _) => Some(lookup("UNK", t)?),
            (None, Some(id)) => Some(id),
            (None, None) => inner.token_to_id("<unk>"),
        };

        let decoder = serde_json::to_value(inner.get_decoder()).unwrap_or(Value::Null);
        let pieces = if is_llama_decoder(&decoder) {
            let special = inner.get_added_tokens_decoder();
            let mut table = vec![Piece::Invalid; vocab_size];
            for (token, &id) in &vocab {
                let is_special = special.get(&id).is_some_and(|t| t.special);
                table[id as usize] = if is_special {
                    Piece::Skip
                } else if let Some(b) = byte_piece(token) {
                    Piece::Byte(b)
                } else {
                    Piece::Text(token.replace('\u{2581}', " ").into_boxed_str())
                };
            }
            Some(table)
        } else {
            None
        };

        Ok(Tokenizer {
            inner,
            source,
            vocab_size,
            bos_id,
            eos_id,
            unk_id,
            add_bos: config.add_bos.unwrap_or(true),
            add_eos: config.add_eos.unwrap_or(false),
            pieces,
        })
    }

    pub fn source(&self) -> TokenizerSource {
        self.source
    }

    /// Number of ids (largest id + 1), added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// What `tokenizer_config.json` says (`add_bos_token`, default true).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// What `tokenizer_config.json` says (`add_eos_token`, default false).
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Encode text. `with_special` = add BOS (and EOS if configured) as the config says.
    /// Special-token strings inside the text (e.g. `"</s>"`) are matched as the reference tokenizer does.
    pub fn encode(&self, text: &str, with_special: bool) -> Result<Vec<u32>> {
        let enc = guard("encoding", || {
            self.inner
                .encode_fast(text, false)
                .map_err(|e| Error::invalid(format!("could not encode text: {e}")))
        })?;
        let ids = enc.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 2);
        if with_special && self.add_bos {
            out.push(self.bos_id);
        }
        out.extend_from_slice(ids);
        if with_special && self.add_eos {
            out.push(self.eos_id);
        }
        Ok(out)
    }

    /// Full decode (skip_special_tokens = true), SentencePiece leading-space rule applied.
    /// An id outside the vocabulary is an `InvalidArgument` error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.pieces {
            Some(table) => {
                let mut state = StreamState::new();
                let mut out = String::new();
                for &id in ids {
                    let piece = table.get(id as usize).ok_or_else(|| self.bad_id(id))?;
                    state
                        .push_piece(piece, &mut out)
                        .map_err(|()| self.bad_id(id))?;
                }
                state.flush_bytes(&mut out, true);
                Ok(out)
            }
            None => {
                if let Some(&id) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
                    return Err(self.bad_id(id));
                }
                self.hf_decode(ids)
            }
        }
    }

    /// `tokenizers`' own decode (skip special tokens).
    pub(crate) fn hf_decode(&self, ids: &[u32]) -> Result<String> {
        guard("decoding", || {
            self.inner
                .decode(ids, true)
                .map_err(|e| Error::invalid(format!("could not decode ids: {e}")))
        })
    }

    /// The vocabulary string of an id (`"▁Hello"`, `"<0x0A>"`, `"</s>"`).
    pub fn id_to_piece(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a vocabulary string, added tokens included.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    /// A stream decoder borrowing this tokenizer. For one that does not borrow, keep a
    /// [`StreamState`] (see [`Tokenizer::stream_state`]) and pass the tokenizer to each call.
    pub fn stream(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// An owned stream-decoding state: `state.push(&tok, id)`, `state.finish(&tok)`.
    pub fn stream_state(&self) -> StreamState {
        StreamState::new()
    }

    /// The pipeline as `tokenizer.json` text (for the SentencePiece route: what the
    /// conversion produced).
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("could not serialise tokenizer: {e}"),
            )
        })
    }
}
