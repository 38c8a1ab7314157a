-- The usage ledger (Postgres). Times are milliseconds since the Unix epoch (UTC); money is
-- integer micro-units of the price's currency; the SQLite schema (../sqlite) is the same.

CREATE TABLE tenants (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    -- How far the balance may go below zero through requests already running when it ran out.
    overdraft_micros BIGINT NOT NULL DEFAULT 0 CHECK (overdraft_micros >= 0),
    created_ms       BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    -- The first characters of the secret, shown to people to tell keys apart.
    prefix            TEXT NOT NULL,
    -- sha256 of the secret, hex; the secret itself is never stored.
    secret_sha256     TEXT NOT NULL UNIQUE,
    name              TEXT NOT NULL DEFAULT '',
    created_ms        BIGINT NOT NULL,
    expires_ms        BIGINT,
    revoked_ms        BIGINT,
    requests_per_min  BIGINT,
    tokens_per_min    BIGINT,
    max_concurrent    BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE prices (
    model              TEXT NOT NULL,
    mode               TEXT NOT NULL,
    token_class        TEXT NOT NULL,
    effective_ms       BIGINT NOT NULL,
    micros_per_million BIGINT NOT NULL CHECK (micros_per_million >= 0),
    currency           TEXT NOT NULL DEFAULT 'USD',
    PRIMARY KEY (model, mode, token_class, effective_ms)
);

CREATE TABLE usage_records (
    request_id       TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    key_id           TEXT NOT NULL REFERENCES api_keys (id),
    model            TEXT NOT NULL,
    mode             TEXT NOT NULL,
    status           TEXT NOT NULL,
    started_ms       BIGINT NOT NULL,
    finished_ms      BIGINT NOT NULL,
    input_cache_hit  BIGINT NOT NULL,
    input_cache_miss BIGINT NOT NULL,
    output_reasoning BIGINT NOT NULL,
    output_answer    BIGINT NOT NULL,
    cost_micros      BIGINT NOT NULL,
    recorded_ms      BIGINT NOT NULL
);
CREATE INDEX usage_records_tenant_time ON usage_records (tenant_id, started_ms);
CREATE INDEX usage_records_key_time ON usage_records (key_id, started_ms);

-- Append-only: credits (+) and usage debits (-, one per usage record).
CREATE TABLE ledger_entries (
    id            BIGSERIAL PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    amount_micros BIGINT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('credit', 'usage')),
    request_id    TEXT UNIQUE REFERENCES usage_records (request_id),
    note          TEXT NOT NULL DEFAULT '',
    created_ms    BIGINT NOT NULL
);
CREATE INDEX ledger_entries_tenant ON ledger_entries (tenant_id);

-- The sum of a tenant's ledger entries, kept in the same transactions (derivable; audited).
CREATE TABLE balances (
    tenant_id      TEXT PRIMARY KEY REFERENCES tenants (id),
    balance_micros BIGINT NOT NULL DEFAULT 0
);
