//! CPU compute kernels for the DeepSeek-V4 inference engine.
//!
//! * [`bf16`]: bfloat16 <-> f32 conversion.
//! * [`quant`]: the low-precision formats of the official DeepSeek-V4 checkpoint (FP8 E4M3 with
//!   E8M0 block scales, FP4 E2M1 with E8M0 group scales) and our INT4 format (bf16 group scales):
//!   scalar codecs, block dequantization and the quantizers. Layouts: `docs/FORMATS.md`.
//! * [`matmul`]: linear layers `y = x W^T` with bf16, f32, FP8, FP4 or INT4 weights (quantized
//!   weights are decoded in registers, bit-identical to the dense kernels on the dequantized
//!   matrix), deterministic across batch sizes and thread counts; `matmul_mode` adds an opt-in
//!   int8-activation mode for the quantized formats.
//! * [`vec`](mod@vec): small SIMD vector helpers (`dot`, `axpy`).
//! * [`bandwidth`]: a memory read-bandwidth probe used to judge how close the GEMV gets to the
//!   hardware limit.
//!
//! SIMD code paths require AVX2 + FMA (+ F16C for the matmul kernels), are selected at run time
//! with `is_x86_feature_detected!`, and always have a portable scalar fallback, so the crate builds
//! and works on any target.

pub mod bandwidth;
pub mod bf16;
pub mod matmul;
pub mod quant;
pub mod vec;

#[cfg(test)]
pub(crate) mod test_util;
