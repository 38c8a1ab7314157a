//! Encode throughput of the DeepSeek-V4 tokenizer.
//!
//! ```text
//! cargo run --release -p v4-tokenizer --example encode_bench -- [--tokenizer FILE] [--out DIR]
//! scripts/bench_tokenize_python.py DIR/bench_1mb.txt DIR/bench_1m_tokens.txt   # same texts in Python
//! ```
//!
//! Builds a ~1 MB mixed text (every prompt of `shared/fixtures/chat-v4/encode.jsonl` plus every
//! string of `tokenize.jsonl`: English, CJK, code, DSML, emoji, special tokens), repeated with a
//! numbered header until it reaches 1 MiB, and a ~1M-token document from the same material.
//! Writes both to `--out` (default `target/tokenize-bench`) so the Python script encodes the same
//! bytes, then reports single-threaded (`encode_one`, the reference algorithm) and parallel
//! (`encode`) MB/s, and the time of `count` on the 1M-token document. Checks that both paths give
//! identical ids.

use std::path::PathBuf;
use std::time::Instant;

use v4_tokenizer::Tokenizer;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut tokenizer = PathBuf::from(SHARED).join("tokenizer/deepseek-v4/tokenizer.json");
    let mut out = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/tokenize-bench"
    ));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tokenizer" => tokenizer = args.next().ok_or("--tokenizer needs a path")?.into(),
            "--out" => out = args.next().ok_or("--out needs a directory")?.into(),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let t0 = Instant::now();
    let tok = Tokenizer::from_file(&tokenizer)?;
    println!(
        "load: {:.3} s ({})",
        t0.elapsed().as_secs_f64(),
        tokenizer.display()
    );

    let material = material()?;
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("bench_unique.txt"), &material)?;
    let mb_u = material.len() as f64 / 1e6;
    let (secs_u, ids_u) = best_of(3, || tok.encode_one(&material));
    let (secs_ur, ids_ur) = best_of(1, || tok.encode_reference(&material));
    assert_eq!(ids_u, ids_ur, "fast path must equal tokenizers' encode");
    println!(
        "unique text (no repetition): {} bytes, {} tokens; encode_one {:.2} MB/s; tokenizers' encode_fast {:.2} MB/s",
        material.len(),
        ids_u.len(),
        mb_u / secs_u,
        mb_u / secs_ur
    );
    let copies_1mb = (1usize << 20).div_ceil(material.len().max(1));
    let text_1mb = numbered_copies(&material, copies_1mb);
    let path_1mb = out.join("bench_1mb.txt");
    std::fs::write(&path_1mb, &text_1mb)?;

    let mb = text_1mb.len() as f64 / 1e6;
    let (secs_one, ids_one) = best_of(3, || tok.encode_one(&text_1mb));
    let (secs_par, ids_par) = best_of(3, || tok.encode(&text_1mb));
    assert_eq!(
        ids_one, ids_par,
        "parallel encode must equal the one-shot encode"
    );
    let ids_bytes: Vec<u8> = ids_one.iter().flat_map(|id| id.to_le_bytes()).collect();
    std::fs::write(out.join("bench_1mb.ids"), ids_bytes)?;
    println!(
        "1 MB text: {} bytes, {} tokens; encode_one {:.3} s = {:.2} MB/s; encode (threads above PARALLEL_MIN_BYTES) {:.3} s = {:.2} MB/s",
        text_1mb.len(),
        ids_one.len(),
        secs_one,
        mb / secs_one,
        secs_par,
        mb / secs_par
    );

    let per_copy = tok.count(&material).max(1);
    let copies = 1_000_000usize.div_ceil(per_copy);
    let doc = numbered_copies(&material, copies);
    let path_doc = out.join("bench_1m_tokens.txt");
    std::fs::write(&path_doc, &doc)?;
    let (secs_count, n) = best_of(3, || tok.count(&doc));
    let (secs_count_one, n_one) = best_of(1, || tok.encode_one(&doc).len());
    assert_eq!(n, n_one);
    println!(
        "1M-token document: {} bytes, {} tokens; count (parallel) {:.3} s; single-threaded {:.3} s",
        doc.len(),
        n,
        secs_count,
        secs_count_one
    );
    println!(
        "texts written: {} {}",
        path_1mb.display(),
        path_doc.display()
    );
    Ok(())
}

/// The fixture prompts and strings, newline-separated.
fn material() -> Result<String, Box<dyn std::error::Error>> {
    let mut text = String::new();
    for (file, field) in [("encode.jsonl", "prompt"), ("tokenize.jsonl", "text")] {
        let path = PathBuf::from(SHARED).join("fixtures/chat-v4").join(file);
        let data = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for line in data.lines().filter(|l| !l.trim().is_empty()) {
            let rec: serde_json::Value = serde_json::from_str(line)?;
            if let Some(s) = rec[field].as_str() {
                text.push_str(s);
                text.push('\n');
            }
        }
    }
    Ok(text)
}

/// `n` copies of `material`, each after a numbered header line.
fn numbered_copies(material: &str, n: usize) -> String {
    let mut text = String::with_capacity(n * (material.len() + 24));
    for i in 0..n {
        text.push_str(&format!("## Document {i}\n"));
        text.push_str(material);
    }
    text
}

/// Best wall time of `n` runs, and the last result.
fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..n {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    (best, last.expect("n >= 1"))
}
