//! Prices and the cost of a request, in integer micro-units.
//!
//! A price is micro-units per one million tokens of one token class. The cost of a request is
//! `Σ tokens[c] × price[c] / 1,000,000` computed exactly (128-bit) and rounded half up to a
//! whole micro-unit once per request: so a request of one token of a $0.0028/1M class costs 0
//! micro-units, and a balance is always credits minus the sum of these integers, exactly.

use v4_protocol::usage::TokenCounts;

/// The four token classes, in a fixed order (the `token_class` column values).
pub const TOKEN_CLASSES: [&str; 4] = [
    "input_cache_hit",
    "input_cache_miss",
    "output_reasoning",
    "output_answer",
];

/// Micro-units per 1M tokens for each class of [`TOKEN_CLASSES`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PriceSet(pub [i64; 4]);

impl PriceSet {
    /// The cost of `tokens`, rounded half up to a micro-unit.
    pub fn cost(&self, tokens: &TokenCounts) -> i64 {
        let counts = [
            tokens.input_cache_hit,
            tokens.input_cache_miss,
            tokens.output_reasoning,
            tokens.output_answer,
        ];
        let exact: i128 = counts
            .iter()
            .zip(self.0)
            .map(|(&n, p)| n as i128 * p as i128)
            .sum();
        ((exact + 500_000) / 1_000_000) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_exact_and_rounded_once() {
        // V4-Flash: hit $0.0028, miss $0.14, output $0.28 per 1M tokens.
        let flash = PriceSet([2800, 140_000, 280_000, 280_000]);
        let t = TokenCounts {
            input_cache_hit: 1_000_000,
            input_cache_miss: 1_000_000,
            output_reasoning: 500_000,
            output_answer: 500_000,
        };
        assert_eq!(flash.cost(&t), 2800 + 140_000 + 280_000);
        let one = TokenCounts {
            input_cache_miss: 4,
            ..TokenCounts::default()
        };
        assert_eq!(flash.cost(&one), 1); // 0.56 micro-units rounds up
        let tiny = TokenCounts {
            input_cache_hit: 1,
            ..TokenCounts::default()
        };
        assert_eq!(flash.cost(&tiny), 0);
        let huge = TokenCounts {
            output_answer: u32::MAX as u64,
            ..TokenCounts::default()
        };
        assert_eq!(PriceSet([0, 0, 0, 3_480_000]).cost(&huge), 14_946_486_187);
    }
}
