//! A cache serialized mid-sequence and restored (the prefill → decode handoff) continues
//! exactly as the uninterrupted sequence; bytes of another shape are refused.

mod common;

use v4_engine::cache_codec::{CacheCodecError, decode_for, encode};
use v4_engine::model::Logits;

#[test]
fn a_restored_cache_continues_bit_identically() {
    let m = common::model("ckpt-bf16");
    // Long enough to fill the window ring and emit compressed and indexer entries.
    let prompt: Vec<u32> = (0..70u32).map(|i| (i * 29 + 3) % 500).collect();
    let next = [17u32, 4, 250];

    let mut whole = m.new_cache();
    m.forward(&mut [(&mut whole, &prompt[..])], Logits::None, false)
        .unwrap();
    let mut moved = decode_for(&encode(&whole), &m.new_cache()).unwrap();
    assert_eq!(moved.pos, whole.pos);
    assert_eq!(moved.bytes() > 0, true);
    for t in next {
        let a = m
            .forward(&mut [(&mut whole, &[t][..])], Logits::Last, false)
            .unwrap();
        let b = m
            .forward(&mut [(&mut moved, &[t][..])], Logits::Last, false)
            .unwrap();
        assert_eq!(a.logits, b.logits, "token {t}");
    }
    // Round trip is byte-stable.
    assert_eq!(encode(&moved), encode(&whole));
}

#[test]
fn foreign_or_damaged_bytes_are_refused() {
    let m = common::model("ckpt-bf16");
    let mut c = m.new_cache();
    m.forward(&mut [(&mut c, &[0u32, 5, 9][..])], Logits::None, false)
        .unwrap();
    let bytes = encode(&c);
    let empty = m.new_cache();
    assert_eq!(
        decode_for(b"nope", &empty).unwrap_err(),
        CacheCodecError::Magic
    );
    assert!(matches!(
        decode_for(&bytes[..bytes.len() - 3], &empty),
        Err(CacheCodecError::Truncated(_))
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        decode_for(&longer, &empty).unwrap_err(),
        CacheCodecError::Trailing(1)
    );
    let mut fewer = empty.clone();
    fewer.layers.pop();
    assert!(matches!(
        decode_for(&bytes, &fewer),
        Err(CacheCodecError::Mismatch(_))
    ));
}
