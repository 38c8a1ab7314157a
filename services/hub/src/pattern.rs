//! Include patterns with the semantics of Python `huggingface_hub`'s `allow_patterns`
//! (`fnmatch.fnmatch` on the repo-relative path): `*` matches any run of characters, `/`
//! included, so `*.safetensors` also matches `sub/x.safetensors`; `?` matches one character;
//! `[abc]`, `[a-z]` and `[!abc]` are character classes (an unclosed `[` is a literal); a
//! pattern ending in `/` matches everything below that directory. Matching is case-sensitive.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Star,
    One,
    Lit(char),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled include pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    source: String,
    toks: Vec<Tok>,
}

impl Pattern {
    pub(crate) fn new(pattern: &str) -> Self {
        let mut text = pattern.replace('\\', "/");
        if text.ends_with('/') {
            text.push('*');
        }
        Pattern {
            source: pattern.to_string(),
            toks: compile(&text),
        }
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        let chars: Vec<char> = path.chars().collect();
        matches(&self.toks, &chars)
    }
}

fn compile(pattern: &str) -> Vec<Tok> {
    let p: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' => {
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
                i += 1;
            }
            '?' => {
                toks.push(Tok::One);
                i += 1;
            }
            '[' => {
                // Same scan as Python's fnmatch.translate: `!` negates, a `]` right after the
                // opening (or after `!`) is a member.
                let mut j = i + 1;
                if j < p.len() && p[j] == '!' {
                    j += 1;
                }
                if j < p.len() && p[j] == ']' {
                    j += 1;
                }
                while j < p.len() && p[j] != ']' {
                    j += 1;
                }
                if j >= p.len() {
                    toks.push(Tok::Lit('['));
                    i += 1;
                    continue;
                }
                let mut body = &p[i + 1..j];
                let negated = body.first() == Some(&'!');
                if negated {
                    body = &body[1..];
                }
                let mut ranges = Vec::new();
                let mut k = 0;
                while k < body.len() {
                    if k + 2 < body.len() && body[k + 1] == '-' {
                        if body[k] <= body[k + 2] {
                            ranges.push((body[k], body[k + 2]));
                        }
                        k += 3;
                    } else {
                        ranges.push((body[k], body[k]));
                        k += 1;
                    }
                }
                toks.push(Tok::Class { negated, ranges });
                i = j + 1;
            }
            c => {
                toks.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    toks
}

fn one_matches(tok: &Tok, c: char) -> bool {
    match tok {
        Tok::Star => true,
        Tok::One => true,
        Tok::Lit(l) => *l == c,
        Tok::Class { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
    }
}

/// Wildcard matching with single-star backtracking (linear in practice).
fn matches(toks: &[Tok], s: &[char]) -> bool {
    let (mut t, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if t < toks.len() && toks[t] == Tok::Star {
            star = Some((t, i));
            t += 1;
        } else if t < toks.len() && one_matches(&toks[t], s[i]) {
            t += 1;
            i += 1;
        } else if let Some((st, si)) = star {
            t = st + 1;
            i = si + 1;
            star = Some((st, si + 1));
        } else {
            return false;
        }
    }
    toks[t..].iter().all(|tok| *tok == Tok::Star)
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p).matches(s)
    }

    #[test]
    fn fnmatch_semantics() {
        assert!(m("*.json", "config.json"));
        assert!(m("*.json", "sub/extra.json"));
        assert!(!m("*.json", "config.jsonx"));
        assert!(m("model-*.safetensors", "model-00001-of-00002.safetensors"));
        assert!(m("config.json", "config.json"));
        assert!(!m("config.json", "sub/config.json"));
        assert!(m("sub/", "sub/a/b.bin"));
        assert!(!m("sub/", "subx/a"));
        assert!(m("model-0000[12]-*", "model-00002-of-00002.safetensors"));
        assert!(!m("model-0000[!12]-*", "model-00002-of-00002.safetensors"));
        assert!(m("[a-c]?.txt", "b1.txt"));
        assert!(m("a[b", "a[b"));
        assert!(m("*", ""));
        assert!(!m("", "x"));
        assert!(m("**/*.py", "a/b/c.py"));
        assert!(m("*a*b*c", "xxaxxbxxbxc"));
        assert!(!m("*a*b*c", "xxaxxbxxbx"));
        assert!(m("[]]", "]"));
        assert!(m("Ö*", "Öl.txt"));
    }
}
