//! Memory read-bandwidth probe: the yardstick for memory-bound kernels such as the decode GEMV.

use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

/// Measures the achievable read bandwidth of main memory on the current rayon pool.
///
/// Allocates `bytes` (rounded down to whole 8-byte words, at least one), writes every word first so
/// all pages are mapped (the first touch happens in parallel, so pages spread over the pool's
/// threads like the reads will), then times `iters` passes (at least one) of a parallel read-only
/// wrapping sum over the buffer.
///
/// Returns the **best** (highest) pass, in bytes per second. Use a buffer well above the last-level
/// cache size (e.g. 1 GiB) to measure DRAM rather than cache bandwidth.
pub fn measure_read_bandwidth(bytes: usize, iters: usize) -> f64 {
    let words = (bytes / 8).max(1);
    // Chunks of 1 MiB give rayon enough pieces to balance without measurable scheduling cost.
    const CHUNK: usize = 1 << 17;
    // `vec!` of zeros maps pages lazily; the parallel fill below is what first touches them.
    let mut buf: Vec<u64> = vec![0; words];
    buf.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (i, w) in chunk.iter_mut().enumerate() {
                *w = (c * CHUNK + i) as u64;
            }
        });
    let bytes_read = (words * 8) as f64;
    let mut best = 0.0f64;
    for _ in 0..iters.max(1) {
        let start = Instant::now();
        let sum = buf
            .par_chunks(CHUNK)
            .map(sum_streams)
            .reduce(|| 0, u64::wrapping_add);
        black_box(sum);
        let secs = start.elapsed().as_secs_f64();
        if secs > 0.0 {
            best = best.max(bytes_read / secs);
        }
    }
    best
}

/// Wrapping sum of `chunk`, read as several interleaved sequential streams (like a GEMV reading
/// several weight rows at once): more streams keep more cache-line fetches in flight than a single
/// one, so the probe reports what the memory system can actually deliver rather than what one
/// stream's prefetcher achieves.
fn sum_streams(chunk: &[u64]) -> u64 {
    const STREAMS: usize = 4;
    const LANES: usize = 8;
    let part = chunk.len() / STREAMS / LANES * LANES;
    let mut acc = [[0u64; LANES]; STREAMS];
    for i in (0..part).step_by(LANES) {
        for (s, acc) in acc.iter_mut().enumerate() {
            let words = &chunk[s * part + i..][..LANES];
            for l in 0..LANES {
                acc[l] = acc[l].wrapping_add(words[l]);
            }
        }
    }
    let tail = chunk[STREAMS * part..]
        .iter()
        .fold(0u64, |a, &w| a.wrapping_add(w));
    acc.iter().flatten().fold(tail, |a, &w| a.wrapping_add(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_positive_rate() {
        let bw = measure_read_bandwidth(8 << 20, 3);
        assert!(bw.is_finite() && bw > 1e8, "{bw}");
        // The stream split covers every word exactly once.
        let words: Vec<u64> = (1..=1003).collect();
        assert_eq!(sum_streams(&words), 1003 * 1004 / 2);
        // Degenerate arguments still work.
        assert!(measure_read_bandwidth(0, 0) >= 0.0);
    }
}
