//! `v4convert`: download, convert, inspect and verify DeepSeek-V4 checkpoints.
//!
//! * [`source`] reads the checkpoint being converted (positioned reads, bounded memory);
//! * [`plan`] decides, before anything is written, what every tensor becomes;
//! * [`codec`] converts one tensor in row blocks; [`convert`] drives a whole conversion
//!   (temporary directory, resume, final rename); [`quant_config`] and [`manifest`] describe
//!   the result;
//! * [`inspect`], [`verify`] and [`quality`] look at checkpoints; [`gguf`] writes and reads
//!   llama.cpp's GGUF.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules.

pub mod codec;
pub mod convert;
pub mod error;
pub mod gguf;
pub mod inspect;
pub mod manifest;
pub mod plan;
pub mod progress;
pub mod quality;
pub mod quant_config;
pub mod source;
pub mod verify;

pub use error::ConvertError;
