//! The Vicuna v1.1 chat template.
//!
//! `{system} USER: {msg} ASSISTANT: {reply}</s>USER: {msg2} ASSISTANT:` with BOS once at the
//! start. A session renders only the text of the new turn; the `</s>` that ends a reply is the
//! model's own EOS token (or is appended as a token when a reply ended another way).

/// Wizard-Vicuna's system line.
pub const VICUNA_SYSTEM: &str =
    "A chat between a curious user and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// The text of the first turn of a conversation.
pub fn first_turn(system: &str, user: &str) -> String {
    if system.is_empty() {
        format!("USER: {user} ASSISTANT:")
    } else {
        format!("{system} USER: {user} ASSISTANT:")
    }
}

/// The text of a later turn (after the previous reply's `</s>`).
pub fn next_turn(user: &str) -> String {
    format!("USER: {user} ASSISTANT:")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn template() {
        assert_eq!(first_turn("SYS", "hi"), "SYS USER: hi ASSISTANT:");
        assert_eq!(next_turn("again"), "USER: again ASSISTANT:");
    }
}
