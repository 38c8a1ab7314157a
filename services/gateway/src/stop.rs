//! Stop strings over streamed content: text that could still become the start of a stop string
//! is held back until the next piece decides it, so a match split across deltas is found and
//! nothing of the stop string is ever sent.

/// Finds the first stop string in a stream of content deltas.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// Empty stop strings are ignored.
    pub(crate) fn new(stops: Vec<String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    /// Takes the next content delta. Returns the text that can be sent now and, when a stop
    /// string matched, that string (the text is then cut before it; the stream is over).
    pub(crate) fn push(&mut self, text: &str) -> (String, Option<String>) {
        if self.stops.is_empty() {
            return (text.to_string(), None);
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.push_str(text);
        let mut best: Option<(usize, &String)> = None;
        for s in &self.stops {
            if let Some(p) = buf.find(s.as_str())
                && best.is_none_or(|(bp, bs)| p < bp || (p == bp && s.len() > bs.len()))
            {
                best = Some((p, s));
            }
        }
        if let Some((p, s)) = best {
            let matched = s.clone();
            buf.truncate(p);
            return (buf, Some(matched));
        }
        let keep = self
            .stops
            .iter()
            .map(|s| partial_suffix(&buf, s))
            .max()
            .unwrap_or(0);
        let split = buf.len() - keep;
        self.held = buf[split..].to_string();
        buf.truncate(split);
        (buf, None)
    }

    /// The held-back text (the content ended without a match).
    pub(crate) fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The length of the longest proper prefix of `stop` that `buf` ends with.
fn partial_suffix(buf: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .find(|&k| stop.is_char_boundary(k) && buf.ends_with(&stop[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (t, hit) = m.push(p);
            out.push_str(&t);
            if hit.is_some() {
                return (out, hit);
            }
        }
        out.push_str(&m.flush());
        (out, None)
    }

    #[test]
    fn matches_across_pieces_and_cuts_before_the_stop() {
        assert_eq!(
            run(&["there"], &["Hello th", "ere! How"]),
            ("Hello ".into(), Some("there".into()))
        );
        assert_eq!(
            run(&["\n\n", "END"], &["a", "\n", "\nb"]),
            ("a".into(), Some("\n\n".into()))
        );
        assert_eq!(run(&["xyz"], &["ab", "xy"]), ("abxy".into(), None));
        assert_eq!(run(&[], &["ab", "cd"]), ("abcd".into(), None));
        assert_eq!(run(&[""], &["ab"]), ("ab".into(), None));
    }

    #[test]
    fn earliest_match_wins_and_nothing_of_it_leaks() {
        let mut m = StopMatcher::new(vec!["bc".into(), "abcd".into()]);
        let (t, hit) = m.push("xa");
        assert_eq!((t.as_str(), hit), ("x", None));
        let (t, hit) = m.push("bcd");
        assert_eq!((t.as_str(), hit.as_deref()), ("", Some("abcd")));
        // Multi-byte characters are never split.
        assert_eq!(run(&["éé"], &["aé", "b"]), ("aéb".into(), None));
        assert_eq!(
            run(&["。"], &["好。", "x"]),
            ("好".into(), Some("。".into()))
        );
    }
}
