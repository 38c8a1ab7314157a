//! Unique ids for inboxes and transfers, without a random-number dependency.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A per-process random prefix (std's randomly keyed hasher over the time and pid).
fn process_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let mut h = RandomState::new().build_hasher();
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.write_u32(std::process::id());
        h.finish()
    })
}

/// A token unique within this process and, with overwhelming probability, across processes:
/// 16 hex digits of process seed + a counter. Valid as a subject token.
pub fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{n:x}", process_seed())
}

/// A short random token (8 hex digits), for instance names.
pub fn short_token() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write(unique_token().as_bytes());
    format!("{:08x}", h.finish() as u32)
}
