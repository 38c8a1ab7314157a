//! [`LedgerError`].

/// A failed ledger operation.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot connect to the ledger database {url}: {message}")]
    Connect { url: String, message: String },
    #[error("ledger database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("ledger migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("usage stream: {0}")]
    Stream(String),
    #[error("no random numbers from the operating system: {0}")]
    Random(#[from] getrandom::Error),
}
