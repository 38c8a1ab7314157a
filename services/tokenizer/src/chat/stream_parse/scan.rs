//! Text scanning helpers of the streaming parser, written as plain byte loops where that
//! matters: the exhaustive split tests run them hundreds of millions of times in debug builds.

/// The earliest occurrence of one of `markers` (all start with `<`) in `hay`.
pub(super) fn find_first(hay: &str, markers: &[&'static str]) -> Option<(usize, &'static str)> {
    let mut from = 0;
    while let Some(found) = hay[from..].find('<') {
        let at = from + found;
        if let Some(m) = markers.iter().find(|m| hay[at..].starts_with(**m)) {
            return Some((at, m));
        }
        from = at + 1;
    }
    None
}

/// Length in bytes of the leading whitespace of `s`.
pub(super) fn leading_ws(s: &str) -> usize {
    let bytes = s.as_bytes();
    let mut n = 0;
    while n < bytes.len() {
        if matches!(bytes[n], b' ' | b'\n' | b'\t' | b'\r') {
            n += 1;
        } else if bytes[n] < 0x80 {
            break;
        } else {
            // Rare: other (Unicode) whitespace.
            return n + (s.len() - n - s[n..].trim_start().len());
        }
    }
    n
}

/// `hay.find(needle)` as a plain byte loop (several times faster than `str::find` in
/// unoptimized builds, where the exhaustive split tests run).
pub(super) fn find_str(hay: &str, needle: &str) -> Option<usize> {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    let first = needle[0];
    let last = hay.len().checked_sub(needle.len())?;
    let mut i = 0;
    while i <= last {
        if hay[i] == first && &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Length of the longest suffix of `buf` that is a proper prefix of one of `markers` (the
/// text that must be held back). Every marker starts with an ASCII byte, so a matching suffix
/// always starts at a character boundary.
pub(super) fn partial_suffix_len(buf: &str, markers: &[&str]) -> usize {
    let bytes = buf.as_bytes();
    let longest = markers
        .iter()
        .map(|m| m.len() - 1)
        .max()
        .unwrap_or(0)
        .min(bytes.len());
    (1..=longest)
        .rev()
        .find(|&k| {
            let suffix = &bytes[bytes.len() - k..];
            markers
                .iter()
                .any(|m| m.len() > k && m.as_bytes().starts_with(suffix))
        })
        .unwrap_or(0)
}
