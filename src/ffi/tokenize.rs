//! Tokenizing and detokenizing with a model's tokenizer, in the two-call buffer pattern.

use super::error::{wv_status, FfiError};
use super::ffi::{
    arg_slice, arg_str, check_out, clone_handle, copy_out, token_to_c, tokens_from_c,
};
use super::model::wv_model;
use super::panic::guard;
use std::ffi::c_char;

/// Turn UTF-8 `text` into token ids. With `add_special` true, BOS (and EOS, if the tokenizer
/// config says so) are added as the model's tokenizer config says; text like `</s>` inside
/// `text` is matched as the special token either way.
///
/// Two-call pattern: with `tokens` NULL and `capacity` 0, `*out_count` receives the number of
/// tokens and the result is `WV_OK`; with a buffer of at least that many elements the ids are
/// written; with a smaller one nothing is written, `*out_count` receives the count needed, and
/// the result is `WV_ERR_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn wv_tokenize(
    model: *const wv_model,
    text: *const c_char,
    add_special: bool,
    tokens: *mut i32,
    capacity: usize,
    out_count: *mut usize,
) -> wv_status {
    guard(|| {
        let m = clone_handle(model, "model")?;
        let text = arg_str(text, "text")?;
        check_out(out_count, "out_count")?;
        let ids: Vec<i32> = m
            .model
            .tokenizer
            .encode(text, add_special)?
            .into_iter()
            .map(token_to_c)
            .collect();
        copy_out(&ids, tokens, capacity, out_count, "wv_tokenize")
    })
}

/// Turn token ids into UTF-8 text (special tokens are skipped; SentencePiece's leading space
/// of the whole text is dropped). The text is NUL-terminated.
///
/// Two-call pattern, counting bytes including the terminating NUL: with `text` NULL and
/// `capacity` 0, `*out_size` receives the size needed and the result is `WV_OK`; with a buffer
/// of at least that size the text is written; with a smaller one nothing is written,
/// `*out_size` receives the size needed, and the result is `WV_ERR_BUFFER_TOO_SMALL`. The
/// text's length is `*out_size - 1` (it may contain NUL bytes if the ids decode to U+0000).
/// `tokens` may be NULL when `n_tokens` is 0. An id outside the vocabulary is
/// `WV_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn wv_detokenize(
    model: *const wv_model,
    tokens: *const i32,
    n_tokens: usize,
    text: *mut c_char,
    capacity: usize,
    out_size: *mut usize,
) -> wv_status {
    guard(|| {
        let m = clone_handle(model, "model")?;
        let ids = tokens_from_c(arg_slice(tokens, n_tokens, "tokens")?, "tokens")?;
        check_out(out_size, "out_size")?;
        let mut bytes = m.model.tokenizer.decode(&ids)?.into_bytes();
        bytes.push(0);
        copy_out(
            &bytes,
            text.cast::<u8>(),
            capacity,
            out_size,
            "wv_detokenize",
        )
    })
}

/// The vocabulary string of one token id (`"▁Hello"`, `"<0x0A>"`, `"</s>"`), NUL-terminated,
/// in the same two-call pattern as `wv_detokenize`. `WV_ERR_INVALID_ARGUMENT` for an id
/// outside the vocabulary.
#[no_mangle]
pub unsafe extern "C" fn wv_token_to_piece(
    model: *const wv_model,
    token: i32,
    piece: *mut c_char,
    capacity: usize,
    out_size: *mut usize,
) -> wv_status {
    guard(|| {
        let m = clone_handle(model, "model")?;
        check_out(out_size, "out_size")?;
        let s = u32::try_from(token)
            .ok()
            .and_then(|id| m.model.tokenizer.id_to_piece(id))
            .ok_or_else(|| FfiError::invalid(format!("token {token} is not in the vocabulary")))?;
        let mut bytes = s.into_bytes();
        bytes.push(0);
        copy_out(
            &bytes,
            piece.cast::<u8>(),
            capacity,
            out_size,
            "wv_token_to_piece",
        )
    })
}
