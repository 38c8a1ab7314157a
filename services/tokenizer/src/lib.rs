//! Everything between text and token ids for DeepSeek-V4: the tokenizer (`tokenizer.json`),
//! streaming detokenization that never emits broken UTF-8, the chat encoder (a native port of
//! the official `encoding_dsv4.py`), and the output parser (reasoning, content, DSML tool
//! calls). No other part of the stack tokenizes.

pub mod chat;
pub mod service;
pub mod stream;
pub mod synthetic;
pub mod tokenizer;

pub use tokenizer::{Tokenizer, TokenizerError};
