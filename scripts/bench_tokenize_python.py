#!/usr/bin/env python3
"""Encode throughput of PyPI `tokenizers` on the texts written by the Rust bench.

    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers==0.23.3
    cargo run --release -p v4-tokenizer --example encode_bench
    /tmp/tokvenv/bin/python scripts/bench_tokenize_python.py \
        target/tokenize-bench/bench_1mb.txt target/tokenize-bench/bench_1m_tokens.txt

Reports the best of 3 runs of `Tokenizer.encode(text, add_special_tokens=False)` (one call, as
the reference fixtures were made; `tokenizers` does not parallelise a single string) in MB/s, and
the time to count the tokens of the ~1M-token document. If the Rust bench left
`bench_1mb.ids` (little-endian u32) beside the text, the ids are compared too.
"""

import argparse
import struct
import sys
import time
from pathlib import Path

from tokenizers import Tokenizer, __version__

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOKENIZER = ROOT.parent / "shared" / "tokenizer" / "deepseek-v4" / "tokenizer.json"


def best_of(n, f):
    best, result = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        result = f()
        best = min(best, time.perf_counter() - t)
    return best, result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("text_1mb", type=Path)
    ap.add_argument("doc_1m_tokens", type=Path, nargs="?")
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    args = ap.parse_args()
    if not args.tokenizer.exists():
        sys.exit(f"tokenizer missing: {args.tokenizer}")

    t = time.perf_counter()
    tok = Tokenizer.from_file(str(args.tokenizer))
    print(f"tokenizers {__version__}, load {time.perf_counter() - t:.3f} s")

    unique = args.text_1mb.with_name("bench_unique.txt")
    if unique.exists():
        u = unique.read_bytes().decode("utf-8")
        secs, enc = best_of(3, lambda: tok.encode(u, add_special_tokens=False))
        print(f"unique text (no repetition): {len(u.encode())} bytes, {len(enc.ids)} tokens; "
              f"encode {len(u.encode()) / 1e6 / secs:.2f} MB/s")

    text = args.text_1mb.read_bytes().decode("utf-8")  # no newline translation
    size = len(text.encode("utf-8"))
    secs, enc = best_of(3, lambda: tok.encode(text, add_special_tokens=False))
    print(f"1 MB text: {size} bytes, {len(enc.ids)} tokens; encode {secs:.3f} s = {size / 1e6 / secs:.2f} MB/s")
    ids_file = args.text_1mb.with_suffix(".ids")
    if ids_file.exists():
        rust_ids = list(struct.unpack(f"<{ids_file.stat().st_size // 4}I", ids_file.read_bytes()))
        same = rust_ids == enc.ids
        print(f"ids identical to the Rust encode ({ids_file.name}): {same}")
        if not same:
            sys.exit(1)

    if args.doc_1m_tokens:
        doc = args.doc_1m_tokens.read_bytes().decode("utf-8")
        secs, n = best_of(3, lambda: len(tok.encode(doc, add_special_tokens=False).ids))
        print(f"1M-token document: {len(doc.encode('utf-8'))} bytes, {n} tokens; count {secs:.3f} s")


if __name__ == "__main__":
    main()
