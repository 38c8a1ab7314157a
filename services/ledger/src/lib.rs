//! The usage ledger: tenants, API keys, prices, usage records and balances, on Postgres (the
//! mesh) or SQLite (the all-in-one default), with the same behaviour on both.
//!
//! * **Keys**: only the sha256 of a secret and its visible prefix are stored; the secret is
//!   returned once by [`Ledger::create_key`].
//! * **Money** is integer micro-units; a request's cost is computed exactly and rounded once
//!   ([`pricing`]), at the prices in force when it *started* (prices have an effective time).
//! * **Exactly once**: [`Ledger::apply_usage`] records a batch of usage events in one
//!   transaction, keyed by request id: an event seen again (a redelivery) changes nothing. The
//!   usage record, its debit entry and the balance move together or not at all.
//! * **Balances** are an append-only ledger of credits and debits; the `balances` table is
//!   their sum, kept in the same transactions ([`Ledger::ledger_sum`] recomputes it).

pub mod error;
pub mod keys;
pub mod money;
pub mod pricing;
pub mod store;
pub mod writer;

pub use error::LedgerError;
pub use pricing::{PriceSet, TOKEN_CLASSES};
pub use store::{ApiKey, Applied, KeyLimits, Ledger, Tenant, UsageRow, now_ms};
pub use writer::{UsageStream, WriterConfig, WriterStats, run_writer};
