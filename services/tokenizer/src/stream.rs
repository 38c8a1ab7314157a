//! Incremental detokenization that never emits a broken UTF-8 sequence.
//!
//! [`DecodeStream`] is the algorithm of HF `tokenizers`' `DecodeStream` (Python
//! `tokenizers.decoders.DecodeStream`, Rust `tokenizers::tokenizer::step_decode_stream`), re-stated
//! here so that it can hold no borrow of the tokenizer (a generation loop owns the stream while
//! the tokenizer is shared) and reports errors with [`TokenizerError`]. Chunk boundaries are
//! exactly the reference's, including the steps that yield nothing (the `stream_chunks` arrays of
//! `tokenize.jsonl`).
//!
//! State: a window of ids `ids`, of which the first `prefix_index` decode to `prefix`, the text
//! already handed out for them. Each step appends the new id and decodes the window; if the result
//! is longer than `prefix` and does not end in U+FFFD (an incomplete character, or a genuine
//! U+FFFD that is therefore delayed by one step), the part after `prefix` is returned and the
//! window slides: the ids before `prefix_index` are dropped and the rest becomes the new prefix.
//! Keeping the previous ids as context is what makes decoders that depend on neighbours (and
//! characters split over several byte-level tokens) come out right.

use crate::tokenizer::{Tokenizer, TokenizerError};

/// Streaming decoder: feed ids one at a time with [`DecodeStream::step`], then call
/// [`DecodeStream::finish`] once. The concatenation of everything returned equals
/// `tokenizer.decode(all_ids, skip_special)`.
#[derive(Debug, Clone, Default)]
pub struct DecodeStream {
    skip_special: bool,
    /// Context window: `ids[..prefix_index]` decode to `prefix`; the rest is pending.
    ids: Vec<u32>,
    /// Text already returned for `ids[..prefix_index]` (as decoded in this window).
    prefix: String,
    prefix_index: usize,
}

impl DecodeStream {
    /// A new stream. `skip_special` drops tokens flagged special (BOS, EOS, pad …), as
    /// [`Tokenizer::decode`] does.
    pub fn new(skip_special: bool) -> Self {
        Self {
            skip_special,
            ..Self::default()
        }
    }

    /// Whether special tokens are dropped.
    pub fn skip_special(&self) -> bool {
        self.skip_special
    }

    /// Feeds one id. Returns the newly completed text, or `None` when this id completes nothing
    /// yet (its bytes are part of an unfinished character, it decodes to nothing, or the text
    /// ends in U+FFFD). An id outside the vocabulary is an error and leaves the stream unchanged.
    pub fn step(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>, TokenizerError> {
        tok.check_ids(&[id])?;
        if self.prefix.is_empty() && !self.ids.is_empty() {
            let new_prefix = tok.decode(&self.ids, self.skip_special)?;
            if !new_prefix.ends_with('\u{FFFD}') {
                self.prefix = new_prefix;
                self.prefix_index = self.ids.len();
            }
        }
        self.ids.push(id);
        let text = tok.decode(&self.ids, self.skip_special)?;
        if text.len() <= self.prefix.len() || text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let Some(new_text) = text.strip_prefix(self.prefix.as_str()) else {
            // Cannot happen with a byte-level decoder (an added token or a complete character
            // never changes what precedes it); reported instead of emitting wrong text.
            return Err(TokenizerError::Internal(format!(
                "decode stream: {:?} does not start with the emitted prefix {:?} (token id {id})",
                text, self.prefix
            )));
        };
        let new_text = new_text.to_owned();
        let new_prefix_index = self.ids.len() - self.prefix_index;
        self.ids.drain(..self.prefix_index);
        self.prefix = tok.decode(&self.ids, self.skip_special)?;
        self.prefix_index = new_prefix_index;
        Ok(Some(new_text))
    }

    /// Flushes what the stream is still holding back (an incomplete character at the end, which
    /// decodes to U+FFFD, or a final genuine U+FFFD) and resets the stream. Returns `None` if
    /// nothing is pending.
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<Option<String>, TokenizerError> {
        let text = tok.decode(&self.ids, self.skip_special)?;
        let rest = match text.strip_prefix(self.prefix.as_str()) {
            Some(rest) if !rest.is_empty() => Some(rest.to_owned()),
            Some(_) => None,
            None => {
                return Err(TokenizerError::Internal(format!(
                    "decode stream: {text:?} does not start with the emitted prefix {:?}",
                    self.prefix
                )));
            }
        };
        *self = Self::new(self.skip_special);
        Ok(rest)
    }

    /// Number of ids currently kept as context or pending.
    pub fn window_len(&self) -> usize {
        self.ids.len()
    }
}

/// Convenience: the chunks a [`DecodeStream`] yields for `ids` (one entry per id, `None` where
/// the step yields nothing), as in the `stream_chunks` fixtures. `finish` is not called.
pub fn stream_chunks(
    tok: &Tokenizer,
    ids: &[u32],
    skip_special: bool,
) -> Result<Vec<Option<String>>, TokenizerError> {
    let mut stream = DecodeStream::new(skip_special);
    ids.iter().map(|&id| stream.step(tok, id)).collect()
}
