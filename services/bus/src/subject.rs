//! Subject validation and wildcard matching (NATS rules).

use crate::error::BusError;

fn invalid(subject: &str, reason: &'static str) -> BusError {
    BusError::InvalidSubject {
        subject: subject.to_string(),
        reason,
    }
}

fn check_tokens(subject: &str) -> Result<(), BusError> {
    if subject.is_empty() {
        return Err(invalid(subject, "empty subject"));
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(subject, "whitespace or control character"));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(invalid(subject, "empty token"));
    }
    Ok(())
}

/// A subject messages can be published to: non-empty tokens, no wildcards.
pub fn check_publish(subject: &str) -> Result<(), BusError> {
    check_tokens(subject)?;
    if subject.split('.').any(|t| t.contains(['*', '>'])) {
        return Err(invalid(
            subject,
            "wildcards are only allowed in subscriptions",
        ));
    }
    Ok(())
}

/// A subscription pattern: `*` matches one token, `>` (last token only) one or more.
pub fn check_pattern(pattern: &str) -> Result<(), BusError> {
    check_tokens(pattern)?;
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.contains(['*', '>']) && *t != "*" && *t != ">" {
            return Err(invalid(pattern, "a wildcard must be a whole token"));
        }
        if *t == ">" && i + 1 != tokens.len() {
            return Err(invalid(pattern, "'>' must be the last token"));
        }
    }
    Ok(())
}

/// A queue group name: non-empty, no whitespace.
pub fn check_queue_group(group: &str) -> Result<(), BusError> {
    if group.is_empty() || group.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BusError::InvalidQueueGroup {
            group: group.to_string(),
        });
    }
    Ok(())
}

/// Whether `subject` (no wildcards) matches `pattern` (already split into tokens).
pub fn matches(pattern: &[String], subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for (i, p) in pattern.iter().enumerate() {
        match p.as_str() {
            ">" => return i + 1 == pattern.len() && tokens.next().is_some(),
            "*" => {
                if tokens.next().is_none() {
                    return false;
                }
            }
            lit => {
                if tokens.next() != Some(lit) {
                    return false;
                }
            }
        }
    }
    tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, subject: &str) -> bool {
        let p: Vec<String> = pattern.split('.').map(String::from).collect();
        matches(&p, subject)
    }

    #[test]
    fn wildcard_matching() {
        assert!(m("a.b.c", "a.b.c"));
        assert!(!m("a.b.c", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(m("a.*.c", "a.x.c"));
        assert!(!m("a.*.c", "a.x.y.c"));
        assert!(m("a.*", "a.x"));
        assert!(!m("a.*", "a"));
        assert!(m("a.>", "a.x"));
        assert!(m("a.>", "a.x.y.z"));
        assert!(!m("a.>", "a"));
        assert!(m(">", "a"));
        assert!(m("*.b.>", "a.b.c.d"));
        assert!(!m("*.b.>", "a.c.c.d"));
    }

    #[test]
    fn validation() {
        for ok in ["a", "a.b", "_INBOX.x1"] {
            check_publish(ok).unwrap();
            check_pattern(ok).unwrap();
        }
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a\n"] {
            assert!(check_publish(bad).is_err(), "{bad:?}");
        }
        for ok in ["a.*", "a.>", "*.*", ">", "a.*.>"] {
            check_pattern(ok).unwrap();
        }
        for bad in ["a.>.b", "a.b*", "a.>x", "", "a..*"] {
            assert!(check_pattern(bad).is_err(), "{bad:?}");
        }
        assert!(check_queue_group("g 1").is_err());
        assert!(check_queue_group("").is_err());
        check_queue_group("v4-tokenizer").unwrap();
    }
}
