//! [`Session`]: one conversation — its tokens, its KV cache on the model's backend, and the
//! generation loop (prefill, sample, decode, stream, stop).
//!
//! The session keeps `tokens` (everything in the conversation) and `n_cached` (how many of them
//! have keys and values in the cache). A generated token is appended to `tokens` when it is
//! sampled but only enters the cache when the next forward pass runs, so a reply's final token
//! (EOS, say) is part of the conversation without costing a forward pass; the next turn's
//! prefill starts with it. A new turn therefore prefills only its own tokens.
//!
//! Cancellation: [`Session::cancel_handle`] gives an `Arc<AtomicBool>` that any thread may set;
//! the running call notices it before the next decode step or prefill chunk and returns
//! [`ErrorKind::Cancelled`], leaving the session consistent (tokens generated so far are kept).

use crate::backend::BackendState;
use crate::chat;
use crate::error::{Error, ErrorKind, Result};
use crate::model::Model;
use crate::sampler::{GenerateOptions, Sampler};
use crate::stop::StopFilter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options for a new session.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Positions the KV cache holds; 0 means the model's `max_position_embeddings`.
    pub context_length: usize,
    /// The chat system line; `None` means Vicuna's.
    pub system_prompt: Option<String>,
}

/// Why a generation call ended (when it ended without an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced its end-of-sequence token.
    Eos,
    /// `max_tokens` were generated.
    MaxTokens,
    /// A stop string appeared.
    StopString,
    /// The token callback asked to stop.
    Callback,
}

/// What a generation call did.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Time to the first sampled token (prefill included).
    pub time_to_first_token: Duration,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    pub stop_reason: StopReason,
}

/// The token id passed to a callback for text released without a new token (the tail held
/// back by a stop-string check or an unfinished character when generation ends).
pub const NO_TOKEN: u32 = u32::MAX;

/// One conversation on a model.
pub struct Session {
    model: Arc<Model>,
    state: Box<dyn BackendState>,
    /// Every token of the conversation, BOS first.
    tokens: Vec<u32>,
    /// How many of `tokens` are in the KV cache.
    n_cached: usize,
    context_length: usize,
    system_prompt: String,
    cancel: Arc<AtomicBool>,
    /// [vocab] logits after the last cached token (valid when `logits_valid`).
    logits: Vec<f32>,
    logits_valid: bool,
    /// Tokens run through the model by this session (prefill and decode), for tests and stats.
    forwarded: usize,
}

impl Session {
    pub fn new(model: Arc<Model>, opts: &SessionOptions) -> Result<Session> {
        let max = model.config.max_position_embeddings;
        let context_length = if opts.context_length == 0 {
            max
        } else {
            opts.context_length
        };
        if context_length > max {
            return Err(Error::invalid(format!(
                "context length {context_length} exceeds the model's maximum of {max}"
            )));
        }
        if context_length < 2 {
            return Err(Error::invalid("context length must be at least 2"));
        }
        let state = model.backend.new_state(context_length)?;
        Ok(Session {
            model,
            state,
            tokens: Vec::new(),
            n_cached: 0,
            context_length,
            system_prompt: opts
                .system_prompt
                .clone()
                .unwrap_or_else(|| chat::VICUNA_SYSTEM.to_string()),
            cancel: Arc::new(AtomicBool::new(false)),
            logits: Vec::new(),
            logits_valid: false,
            forwarded: 0,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
    /// Every token of the conversation so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
    pub fn context_length(&self) -> usize {
        self.context_length
    }
    pub fn system_prompt(&self) -> &str {
        &self.system_prompt
    }
    /// Bytes of the KV cache and scratch space.
    pub fn state_bytes(&self) -> usize {
        self.state.bytes()
    }
    /// How many tokens this session has run through the model so far (prefill and decode).
    pub fn forwarded_tokens(&self) -> usize {
        self.forwarded
    }
    /// A flag that cancels the running call when set (from any thread).
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Forget the conversation (the cache is reused).
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.n_cached = 0;
        self.logits_valid = false;
    }

    /// Keep only the first `n` tokens.
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n > self.tokens.len() {
            return Err(Error::invalid(format!(
                "cannot truncate to {n} tokens: the session holds {}",
                self.tokens.len()
            )));
        }
        if n < self.tokens.len() {
            self.tokens.truncate(n);
            self.n_cached = self.n_cached.min(n);
            self.logits_valid = false;
        }
        Ok(())
    }

    /// Replace the conversation with `tokens` (e.g. when restoring a saved session); the cache
    /// is filled lazily by the next call.
    pub fn set_tokens(&mut self, tokens: Vec<u32>) -> Result<()> {
        if tokens.len() > self.context_length {
            return Err(Error::new(
                ErrorKind::ContextFull,
                format!(
                    "{} tokens do not fit in a context of {}",
                    tokens.len(),
                    self.context_length
                ),
            ));
        }
        let v = self.model.config.vocab_size;
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(Error::invalid(format!(
                "token id {t} is out of range (vocab {v})"
            )));
        }
        self.tokens = tokens;
        self.n_cached = 0;
        self.logits_valid = false;
        Ok(())
    }

    /// Append raw prompt text (BOS first in an empty session, as the tokenizer config says)
    /// and generate. `on_token(id, text)` gets each token and the text it completes; returning
    /// false stops generation.
    pub fn generate(
        &mut self,
        prompt: &str,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32, &str) -> bool,
    ) -> Result<GenerateStats> {
        opts.validate()?;
        let tk = &self.model.tokenizer;
        let mut new = Vec::new();
        if self.tokens.is_empty() && tk.add_bos() {
            new.push(tk.bos_id());
        }
        new.extend(tk.encode(prompt, false)?);
        // The last context token primes the detokeniser, so a continuation keeps its space.
        self.run(new, opts, true, on_token)
    }

    /// Add a user turn in the Vicuna template and generate the assistant's reply.
    pub fn chat(
        &mut self,
        user_message: &str,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32, &str) -> bool,
    ) -> Result<GenerateStats> {
        opts.validate()?;
        let tk = &self.model.tokenizer;
        let mut new = Vec::new();
        let text = if self.tokens.is_empty() {
            new.push(tk.bos_id());
            chat::first_turn(&self.system_prompt, user_message)
        } else {
            if self.tokens.last() != Some(&tk.eos_id()) {
                new.push(tk.eos_id());
            }
            chat::next_turn(user_message)
        };
        new.extend(tk.encode(&text, false)?);
        self.run(new, opts, false, on_token)
    }

    /// Decoding on the device: when exactly the newest token is not yet cached, run it and
    /// choose the next token where the logits are (the CUDA backend: greedy, or temperature
    /// with top-k and top-p, after the repetition penalty; one id crosses to the host instead
    /// of the vocabulary's logits). The draw uses the session sampler's generator exactly as
    /// host sampling would. `None` when the host must sample.
    fn device_sample(&mut self, sampler: &mut Sampler, last: bool) -> Result<Option<u32>> {
        if self.n_cached + 1 != self.tokens.len() {
            return Ok(None);
        }
        let pos = self.n_cached;
        self.logits_valid = false;
        let (backend, state, tokens) = (&self.model.backend, self.state.as_mut(), &self.tokens);
        let r = sampler.device_step(last, |sampling| {
            backend.forward_sample(state, tokens[pos], pos, tokens, sampling)
        });
        match r {
            None => Ok(None),
            Some(next) => {
                let next = next?;
                self.n_cached = pos + 1;
                self.forwarded += 1;
                Ok(Some(next))
            }
        }
    }

    /// Bring the cache up to date with `tokens`, in chunks, checking for cancellation.
    fn catch_up(&mut self) -> Result<()> {
        while self.n_cached < self.tokens.len() {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Error::new(ErrorKind::Cancelled, "cancelled"));
            }
            // Chunks of the backend's size: the granularity of cancellation during a long
            // prompt (each chunk costs the GPU one pass over the weights).
            let chunk_len = self.model.backend.prefill_chunk().max(1);
            let end = (self.n_cached + chunk_len).min(self.tokens.len());
            let chunk = &self.tokens[self.n_cached..end];
            self.logits_valid = false;
            self.model.backend.forward(
                self.state.as_mut(),
                chunk,
                self.n_cached,
                1,
                &mut self.logits,
            )?;
            self.forwarded += end - self.n_cached;
            self.n_cached = end;
            self.logits_valid = true;
        }
        Ok(())
    }

    fn run(
        &mut self,
        new: Vec<u32>,
        opts: &GenerateOptions,
        prime_with_context: bool,
        on_token: &mut dyn FnMut(u32, &str) -> bool,
    ) -> Result<GenerateStats> {
        self.cancel.store(false, Ordering::Relaxed);
        let t0 = Instant::now();
        if self.tokens.len() + new.len() > self.context_length {
            return Err(Error::new(
                ErrorKind::ContextFull,
                format!(
                    "the prompt needs {} tokens but only {} of the context's {} are free",
                    new.len(),
                    self.context_length - self.tokens.len(),
                    self.context_length
                ),
            ));
        }
        if new.is_empty() && self.tokens.is_empty() {
            return Err(Error::invalid("empty prompt in an empty session"));
        }
        let prompt_tokens = new.len();
        let prime = if prime_with_context {
            // The token just before the first generated one.
            new.last().or(self.tokens.last()).copied()
        } else {
            None
        };
        self.tokens.extend_from_slice(&new);
        if !(self.n_cached == self.tokens.len() && self.logits_valid) {
            // Recompute at least the last token so that its logits are fresh.
            if self.n_cached == self.tokens.len() {
                self.n_cached -= 1;
            }
            self.catch_up()?;
        }
        let prefill_time = t0.elapsed();
        let model = self.model.clone();
        let tk = &model.tokenizer;
        let mut stream = tk.stream();
        if let Some(p) = prime {
            // Prime with the last context token and discard its text.
            if p != tk.bos_id() {
                let _ = stream.push(p)?;
            }
        }
        let mut stop = StopFilter::new(&opts.stop);
        let mut sampler = Sampler::new(opts);
        let mut generated = 0;
        let mut ttft = None;
        let t_decode = Instant::now();
        let eos = tk.eos_id();
        let reason = loop {
            if generated >= opts.max_tokens {
                break StopReason::MaxTokens;
            }
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Error::new(ErrorKind::Cancelled, "cancelled"));
            }
            if self.tokens.len() >= self.context_length {
                let rest = stream.finish() + &stop.finish();
                if !rest.is_empty() {
                    on_token(NO_TOKEN, &rest);
                }
                return Err(Error::new(
                    ErrorKind::ContextFull,
                    format!("the context of {} tokens is full", self.context_length),
                ));
            }
            // The token this step chooses is the generation's last when it reaches max_tokens.
            let last = generated + 1 >= opts.max_tokens;
            let next = match self.device_sample(&mut sampler, last)? {
                Some(next) => next,
                None => {
                    if self.n_cached < self.tokens.len() {
                        self.catch_up()?;
                    }
                    let mut logits = std::mem::take(&mut self.logits);
                    let next = sampler.sample(&mut logits, &self.tokens);
                    self.logits = logits;
                    self.logits_valid = false; // the penalty modified them
                    next
                }
            };
            self.tokens.push(next);
            generated += 1;
            ttft.get_or_insert_with(|| t0.elapsed());
            if next == eos {
                let rest = stream.finish() + &stop.finish();
                on_token(next, &rest);
                break StopReason::Eos;
            }
            let piece = stream.push(next)?;
            let (text, hit) = stop.push(&piece);
            let go_on = on_token(next, &text);
            if hit {
                break StopReason::StopString;
            }
            if !go_on {
                break StopReason::Callback;
            }
        };
        if reason != StopReason::StopString && reason != StopReason::Eos {
            let rest = stream.finish() + &stop.finish();
            if !rest.is_empty() {
                on_token(NO_TOKEN, &rest);
            }
        }
        Ok(GenerateStats {
            prompt_tokens,
            generated_tokens: generated,
            time_to_first_token: ttft.unwrap_or_else(|| t0.elapsed()),
            prefill_time,
            decode_time: t_decode.elapsed(),
            stop_reason: reason,
        })
    }
}

/// Saved-session format: magic, format version, ABI version, model fingerprint, context length,
/// system prompt, tokens, then an FNV-1a checksum of everything before it. All integers LE.
const STATE_MAGIC: &[u8; 8] = b"WVSESS\0\x01";
const STATE_FORMAT: u32 = 1;

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl Session {
    /// Serialise the conversation (not the KV cache: a restored session re-fills its cache on
    /// its next call, so saved states are small and portable between CPU and GPU).
    pub fn save_state(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(48 + self.system_prompt.len() + 4 * self.tokens.len());
        b.extend_from_slice(STATE_MAGIC);
        b.extend_from_slice(&STATE_FORMAT.to_le_bytes());
        b.extend_from_slice(&crate::ABI_VERSION.to_le_bytes());
        b.extend_from_slice(&self.model.fingerprint.to_le_bytes());
        b.extend_from_slice(&(self.context_length as u32).to_le_bytes());
        b.extend_from_slice(&(self.system_prompt.len() as u32).to_le_bytes());
        b.extend_from_slice(self.system_prompt.as_bytes());
        b.extend_from_slice(&(self.tokens.len() as u32).to_le_bytes());
        for t in &self.tokens {
            b.extend_from_slice(&t.to_le_bytes());
        }
        let sum = fnv(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    /// Restore a state made by [`Session::save_state`] on the same model. The session's own
    /// context length must be at least the saved token count. On error the session is unchanged.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let bad = |m: &str| Error::format(format!("saved session: {m}"));
        if bytes.len() < STATE_MAGIC.len() + 36 || &bytes[..8] != STATE_MAGIC {
            return Err(bad("not a wv session state (bad magic or too short)"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let mut s8 = [0u8; 8];
        s8.copy_from_slice(sum);
        if fnv(body) != u64::from_le_bytes(s8) {
            return Err(bad("checksum mismatch (corrupt or truncated)"));
        }
        let mut r = Reader { b: &body[8..] };
        let format = r.u32().ok_or_else(|| bad("truncated"))?;
        if format != STATE_FORMAT {
            return Err(bad(&format!(
                "format version {format}, this build reads {STATE_FORMAT}"
            )));
        }
        let abi = r.u32().ok_or_else(|| bad("truncated"))?;
        if abi >> 16 != crate::ABI_VERSION >> 16 {
            return Err(bad(&format!(
                "made by ABI {}.{}, this library is {}.{}",
                abi >> 16,
                abi & 0xffff,
                crate::ABI_VERSION >> 16,
                crate::ABI_VERSION & 0xffff
            )));
        }
        let fp = r.u64().ok_or_else(|| bad("truncated"))?;
        if fp != self.model.fingerprint {
            return Err(Error::invalid(
                "saved session: it was made with a different model",
            ));
        }
        let _ctx = r.u32().ok_or_else(|| bad("truncated"))?;
        let sys_len = r.u32().ok_or_else(|| bad("truncated"))? as usize;
        let sys = r.take(sys_len).ok_or_else(|| bad("truncated"))?;
        let sys = std::str::from_utf8(sys)
            .map_err(|_| bad("system prompt is not UTF-8"))?
            .to_string();
        let n = r.u32().ok_or_else(|| bad("truncated"))? as usize;
        let raw = r
            .take(n.checked_mul(4).ok_or_else(|| bad("bad token count"))?)
            .ok_or_else(|| bad("truncated"))?;
        if !r.b.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let tokens: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        self.set_tokens(tokens)?;
        self.system_prompt = sys;
        Ok(())
    }
}

struct Reader<'a> {
    b: &'a [u8],
}
impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.b.len() {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
    }
}
