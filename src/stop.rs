//! Stop strings: hold back any text that might be the start of a stop string, so that a stop
//! string is never emitted, not even in part, and everything before it is.

/// Filters streamed text against a set of stop strings.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    held: String,
}

impl StopFilter {
    pub fn new(stops: &[String]) -> StopFilter {
        StopFilter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Add `text`; returns the text that is now safe to emit, and whether a stop string was
    /// found (in which case nothing after it is ever emitted).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (text.to_string(), false);
        }
        self.held.push_str(text);
        // The earliest stop string wins.
        if let Some(i) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..i].to_string();
            self.held.clear();
            return (out, true);
        }
        // Keep the longest suffix that is a proper prefix of some stop string.
        let mut keep = 0;
        for (i, _) in self.held.char_indices() {
            let suffix = &self.held[i..];
            if self.stops.iter().any(|s| s.starts_with(suffix)) {
                keep = self.held.len() - i;
                break;
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// The held text, released when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut f = StopFilter::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut out = String::new();
        for p in pieces {
            let (t, stop) = f.push(p);
            out += &t;
            if stop {
                return (out, true);
            }
        }
        out += &f.finish();
        (out, false)
    }

    #[test]
    fn stop_split_over_pieces_is_never_emitted() {
        assert_eq!(
            run(&["USER:"], &["Hello", " US", "ER", ": hi"]),
            ("Hello ".to_string(), true)
        );
    }

    #[test]
    fn false_start_is_released() {
        assert_eq!(
            run(&["USER:"], &["a US", "B done"]),
            ("a USB done".to_string(), false)
        );
    }

    #[test]
    fn held_prefix_is_flushed_at_end() {
        assert_eq!(run(&["###"], &["x #", "#"]), ("x ##".to_string(), false));
    }

    #[test]
    fn multibyte_text() {
        assert_eq!(
            run(&["é!"], &["café", "!", "more"]),
            ("caf".to_string(), true)
        );
    }
}
