//! Incremental detokenisation: generated ids in, text pieces out.
//!
//! Two strategies, chosen by the tokenizer:
//!
//! * **Piece table** (every LLaMA tokenizer: its decoder is Replace("▁", " ") / ByteFallback /
//!   Fuse / Strip(" ", 1, 0)). Each id maps to text, a raw byte or nothing (special tokens);
//!   bytes of an incomplete UTF-8 character are held (at most 3), the leading-space rule is a
//!   flag. O(1) per token, and [`crate::tokenizer::Tokenizer::decode`] runs the same state
//!   machine, so the concatenated stream equals `decode` by construction.
//! * **Sliding window** (any other `tokenizer.json` decoder), as text-generation-inference
//!   does it: decode the ids from `prefix_offset` with and without the newest ones, emit the
//!   difference once it grows and does not end in U+FFFD, then slide the window. The window
//!   holds the last emitted chunk and whatever has not been emitted yet, so each step costs
//!   O(window), not O(history).

use super::{Piece, Tokenizer};
use crate::error::{Error, Result};

const REPLACEMENT: char = '\u{FFFD}';

/// Stream-decoding state that does not borrow the tokenizer: pass the same [`Tokenizer`] to
/// every call. Use it where a borrow is awkward (a session that owns both); otherwise
/// [`Tokenizer::stream`] wraps one in a [`StreamDecoder`].
///
/// `push` returns the text each id completes (possibly empty, never a partial character);
/// [`StreamState::finish`] flushes what is held. The concatenation of everything returned
/// equals `tok.decode(all ids)`. `finish` does not start a new text: later pushes continue
/// it (no second leading-space strip); call [`StreamState::reset`] to start over.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    // piece-table strategy
    /// Bytes of a UTF-8 character that is not complete yet (at most 3).
    pending: Vec<u8>,
    /// Some text has been produced, so the leading-space rule no longer applies.
    started: bool,
    // sliding-window strategy
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl StreamState {
    pub fn new() -> StreamState {
        StreamState::default()
    }

    /// Forget everything: the next push starts a new text.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.started = false;
        self.ids.clear();
        self.prefix_offset = 0;
        self.read_offset = 0;
    }

    /// Feed one generated id; returns the text it completes (possibly empty).
    /// An id outside the vocabulary is an `InvalidArgument` error and changes nothing.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        match &tok.pieces {
            Some(table) => {
                let piece = table.get(id as usize).ok_or_else(|| tok.bad_id(id))?;
                let mut out = String::new();
                self.push_piece(piece, &mut out)
                    .map_err(|()| tok.bad_id(id))?;
                Ok(out)
            }
            None => self.push_window(tok, id),
        }
    }

    /// Flush whatever is still held: an incomplete byte sequence becomes one U+FFFD per byte,
    /// as `decode` does.
    pub fn finish(&mut self, tok: &Tokenizer) -> String {
        match &tok.pieces {
            Some(_) => {
                let mut out = String::new();
                self.flush_bytes(&mut out, true);
                out
            }
            None => self.finish_window(tok),
        }
    }

    // ---------------------------------------------------------------- piece table

    /// Append the text of one piece to `out`. `Err` for an id with no token.
    pub(crate) fn push_piece(&mut self, piece: &Piece, out: &mut String) -> Result<(), ()> {
        match piece {
            Piece::Invalid => return Err(()),
            // Skipped special tokens are invisible: they do not even end a byte run (HF
            // filters them out before its decoder runs).
            Piece::Skip => {}
            Piece::Byte(b) => {
                self.pending.push(*b);
                self.flush_bytes(out, false);
            }
            Piece::Text(text) => {
                self.flush_bytes(out, true);
                self.emit(text, out);
            }
        }
        Ok(())
    }

    /// Decode the held bytes. Complete characters are emitted; each byte that cannot be part
    /// of a valid character becomes U+FFFD (SentencePiece's rule); a trailing incomplete but
    /// still valid prefix is kept unless `run_ended`, in which case its bytes become U+FFFD too.
    pub(crate) fn flush_bytes(&mut self, out: &mut String, run_ended: bool) {
        let mut start = 0;
        let mut text = String::new();
        while start < self.pending.len() {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    text.push_str(s);
                    start = self.pending.len();
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    if let Ok(s) = std::str::from_utf8(&self.pending[start..start + valid]) {
                        text.push_str(s);
                    }
                    start += valid;
                    let bad = match e.error_len() {
                        Some(n) => n,
                        None if run_ended => self.pending.len() - start,
                        None => break, // hold the incomplete character
                    };
                    for _ in 0..bad {
                        text.push(REPLACEMENT);
                    }
                    start += bad;
                }
            }
        }
        self.pending.drain(..start);
        if !text.is_empty() {
            self.emit(&text, out);
        }
    }

    /// Append produced text, stripping one leading space from the very start of the text
    /// (the decoder's `Strip(" ", 1, 0)`: SentencePiece's dummy-prefix rule).
    fn emit(&mut self, text: &str, out: &mut String) {
        if text.is_empty() {
            return;
        }
        if self.started {
            out.push_str(text);
        } else {
            self.started = true;
            out.push_str(text.strip_prefix(' ').unwrap_or(text));
        }
    }

    // ---------------------------------------------------------------- sliding window

    fn push_window(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        if tok.inner.id_to_token(id).is_none() {
            return Err(tok.bad_id(id));
        }
        self.ids.push(id);
        let prefix = tok.hf_decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let text = tok.hf_decode(&self.ids[self.prefix_offset..])?;
        if text.len() > prefix.len()
            && !text.ends_with(REPLACEMENT)
            && text.starts_with(prefix.as_str())
        {
            let new = text[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            self.compact();
            Ok(new)
        } else {
            Ok(String::new())
        }
    }

    fn finish_window(&mut self, tok: &Tokenizer) -> String {
        if self.read_offset >= self.ids.len() {
            return String::new();
        }
        let prefix = tok.hf_decode(&self.ids[self.prefix_offset..self.read_offset]);
        let text = tok.hf_decode(&self.ids[self.prefix_offset..]);
        let out = match (prefix, text) {
            (Ok(p), Ok(t)) if t.starts_with(p.as_str()) => t[p.len()..].to_string(),
            _ => String::new(),
        };
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        self.compact();
        out
    }

    /// Drop ids before the window so memory stays bounded.
    fn compact(&mut self) {
        if self.prefix_offset > 64 {
            self.ids.drain(..self.prefix_offset);
            self.read_offset -= self.prefix_offset;
            self.prefix_offset = 0;
        }
    }
}

/// A [`StreamState`] bound to its tokenizer (see [`Tokenizer::stream`]).
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    state: StreamState,
}

impl<'a> StreamDecoder<'a> {
    pub(crate) fn new(tok: &'a Tokenizer) -> Self {
        StreamDecoder {
            tok,
            state: StreamState::new(),
        }
    }

    /// Feed one generated id; returns the text it completes (possibly empty). Never returns a
    /// partial UTF-8 character (byte-fallback tokens are held until the character is whole);
    /// the first piece follows the leading-space rule; concatenating all returned pieces plus
    /// [`StreamDecoder::finish`] equals `decode(all ids)`. O(1) per token for LLaMA tokenizers.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.state.push(self.tok, id)
    }

    /// Flush whatever is still held (an incomplete byte sequence becomes U+FFFD, as `decode`
    /// does). Later pushes continue the same text; see [`StreamDecoder::reset`].
    pub fn finish(&mut self) -> String {
        self.state.finish(self.tok)
    }

    /// Start a new text.
    pub fn reset(&mut self) {
        self.state.reset();
    }

    /// Take the state out (to keep it without the borrow).
    pub fn into_state(self) -> StreamState {
        self.state
    }
}

impl Tokenizer {
    pub(crate) fn bad_id(&self, id: u32) -> Error {
        Error::invalid(format!(
            "token id {id} is out of range (vocabulary size {})",
            self.vocab_size
        ))
    }
}
