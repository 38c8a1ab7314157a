//! Allocator tuning for the decode loop.
//!
//! A batched step allocates a few large buffers (the head's `[rows, vocab]` logits: 8 MB at
//! batch 16 with V4's vocabulary) and frees them at the end of the step. With glibc's default
//! thresholds such buffers are `mmap`ed and unmapped again, or trimmed from the heap top, so
//! every step page-faults them in afresh (thousands of faults per step, measured with
//! `perf stat`). [`keep_freed_memory`] makes glibc serve allocations below 32 MiB (the most
//! `mallopt` accepts on 64-bit) from the heap
//! and keep up to 1 GiB of freed memory, so the next step reuses the same pages. It only
//! changes where memory comes from, never results. A no-op on other C libraries.

/// Called once by processes that run the engine (workers, `v4 bench`, `v4 serve`).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only adjusts glibc's allocation thresholds; it is safe to call at any
        // time, from any thread.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}
