//! The V4 chat protocol: prompt encoding and completion parsing.

pub mod api;
pub mod encode;
pub mod messages;
pub mod parse;
mod pyjson;
mod pyrepr;
mod render;
pub mod stream_parse;
pub mod validate;
