//! The stdin → stdout loop shared by the JSON-lines filters (`v4 tokenize`, `v4 chat ...`).

use std::io::{BufRead, Write};

use anyhow::Context;
use serde_json::Value;

/// Reads stdin line by line until end of input; every non-blank line is answered by `handle`
/// (a line that is not UTF-8 by `bad_line` with a message), one JSON reply per line, flushed
/// at once so that the filter can be driven interactively.
pub fn filter(
    mut handle: impl FnMut(&str) -> Value,
    bad_line: impl Fn(String) -> Value,
) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("reading stdin")?
            == 0
        {
            return Ok(());
        }
        let reply = match std::str::from_utf8(&line) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => handle(text),
            Err(e) => bad_line(format!("input line is not UTF-8: {e}")),
        };
        serde_json::to_writer(&mut out, &reply).context("writing stdout")?;
        out.write_all(b"\n").context("writing stdout")?;
        out.flush().context("writing stdout")?;
    }
}
