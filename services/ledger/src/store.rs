//! [`Ledger`]: the database behind metering and billing, on Postgres or SQLite (sqlx `Any`,
//! one set of queries; the schemas in `migrations/postgres` and `migrations/sqlite` match).

use std::collections::{BTreeMap, HashMap};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use v4_protocol::usage::UsageEvent;

use crate::error::LedgerError;
use crate::keys;
use crate::pricing::{PriceSet, TOKEN_CLASSES};

static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub overdraft_micros: i64,
}

/// Per-key limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub requests_per_min: Option<i64>,
    pub tokens_per_min: Option<i64>,
    pub max_concurrent: Option<i64>,
}

/// An API key as stored (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub prefix: String,
    pub name: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub limits: KeyLimits,
}

impl ApiKey {
    /// Usable at `now`: not revoked, not expired.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|e| now < e)
    }
}

/// What [`Ledger::apply_usage`] did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Recorded and debited (`cost_micros`).
    Recorded { cost_micros: i64 },
    /// Its request id was recorded before: nothing changed.
    Duplicate,
    /// Its key does not exist: nothing recorded (logged by the caller).
    UnknownKey,
}

/// One row of a usage report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    pub model: String,
    pub mode: String,
    pub requests: i64,
    pub input_cache_hit: i64,
    pub input_cache_miss: i64,
    pub output_reasoning: i64,
    pub output_answer: i64,
    pub cost_micros: i64,
}

/// The ledger database.
#[derive(Clone)]
pub struct Ledger {
    pool: AnyPool,
}

/// Rows per multi-row statement (14 parameters each: far below both databases' limits).
const ROWS_PER_STATEMENT: usize = 500;

/// `head` + `rows` groups of `cols` numbered placeholders (`($1, $2), ($3, $4)`) + `tail`.
/// Only placeholders are generated: no value ever enters the SQL text.
fn multi_row(head: &str, cols: usize, rows: usize, tail: &str) -> String {
    let mut sql = String::from(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * cols + c + 1));
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

/// The usage debit entries of `rows` events: (tenant, amount, request id, time) each.
fn usage_entries_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO ledger_entries (tenant_id, amount_micros, kind, request_id, created_ms) VALUES ",
    );
    for r in 0..rows {
        let b = r * 4;
        sql.push_str(&format!(
            "{}(${}, ${}, 'usage', ${}, ${})",
            if r == 0 { "" } else { ", " },
            b + 1,
            b + 2,
            b + 3,
            b + 4
        ));
    }
    sql
}

/// The columns [`key_from_row`] reads.
macro_rules! key_columns {
    () => {
        "id, tenant_id, prefix, name, created_ms, expires_ms, revoked_ms, requests_per_min, \
         tokens_per_min, max_concurrent"
    };
}

type Prices = BTreeMap<(String, String, String), Vec<(i64, i64)>>;

impl Ledger {
    /// Connects to `url` (`postgres://…` or `sqlite://PATH?mode=rwc`) and applies the
    /// migrations of that dialect.
    pub async fn connect(url: &str) -> Result<Ledger, LedgerError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // SQLite serializes writers anyway; one connection avoids "database is locked".
            .max_connections(if sqlite { 1 } else { 16 })
            // A database that is down fails an operation within seconds (the writer then
            // leaves the events in the stream and retries) instead of hanging.
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| LedgerError::Connect {
                url: redact(url),
                message: e.to_string(),
            })?;
        let migrator = if sqlite { &SQLITE } else { &POSTGRES };
        migrator.run(&pool).await?;
        Ok(Ledger { pool })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn create_tenant(
        &self,
        name: &str,
        overdraft_micros: i64,
    ) -> Result<Tenant, LedgerError> {
        let id = keys::new_id("tn")?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tenants (id, name, overdraft_micros, created_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(name)
        .bind(overdraft_micros)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO balances (tenant_id, balance_micros) VALUES ($1, 0)")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Tenant {
            id,
            name: name.to_string(),
            overdraft_micros,
        })
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, LedgerError> {
        let rows = sqlx::query("SELECT id, name, overdraft_micros FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Tenant {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    overdraft_micros: r.try_get("overdraft_micros")?,
                })
            })
            .collect()
    }

    /// Creates a key; returns it and its secret (shown once, never stored).
    pub async fn create_key(
        &self,
        tenant_id: &str,
        name: &str,
        expires_ms: Option<i64>,
        limits: KeyLimits,
    ) -> Result<(ApiKey, String), LedgerError> {
        let secret = keys::new_secret()?;
        let key = ApiKey {
            id: keys::new_id("key")?,
            tenant_id: tenant_id.to_string(),
            prefix: keys::prefix(&secret),
            name: name.to_string(),
            created_ms: now_ms(),
            expires_ms,
            revoked_ms: None,
            limits,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, prefix, secret_sha256, name, created_ms, \
             expires_ms, requests_per_min, tokens_per_min, max_concurrent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&key.id)
        .bind(tenant_id)
        .bind(&key.prefix)
        .bind(keys::hash_secret(&secret))
        .bind(name)
        .bind(key.created_ms)
        .bind(expires_ms)
        .bind(limits.requests_per_min)
        .bind(limits.tokens_per_min)
        .bind(limits.max_concurrent)
        .execute(&self.pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                LedgerError::NotFound(format!("tenant {tenant_id}"))
            }
            other => other.into(),
        })?;
        Ok((key, secret))
    }

    /// The key whose secret is `secret` (any state; check [`ApiKey::is_active`]).
    pub async fn find_key(&self, secret: &str) -> Result<Option<ApiKey>, LedgerError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE secret_sha256 = $1"
        ))
        .bind(keys::hash_secret(secret))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub async fn keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>, LedgerError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE tenant_id = $1 ORDER BY created_ms, id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes a key (idempotent: the first revocation time stays).
    pub async fn revoke_key(&self, key_id: &str) -> Result<(), LedgerError> {
        let r =
            sqlx::query("UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, $1) WHERE id = $2")
                .bind(now_ms())
                .bind(key_id)
                .execute(&self.pool)
                .await?;
        if r.rows_affected() == 0 {
            return Err(LedgerError::NotFound(format!("key {key_id}")));
        }
        Ok(())
    }

    pub async fn set_limits(&self, key_id: &str, limits: KeyLimits) -> Result<(), LedgerError> {
        let r = sqlx::query(
            "UPDATE api_keys SET requests_per_min = $1, tokens_per_min = $2, max_concurrent = $3 \
             WHERE id = $4",
        )
        .bind(limits.requests_per_min)
        .bind(limits.tokens_per_min)
        .bind(limits.max_concurrent)
        .bind(key_id)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(LedgerError::NotFound(format!("key {key_id}")));
        }
        Ok(())
    }

    /// Credits a tenant (a ledger entry and the balance, in one transaction).
    pub async fn credit(
        &self,
        tenant_id: &str,
        amount_micros: i64,
        note: &str,
    ) -> Result<i64, LedgerError> {
        if amount_micros <= 0 {
            return Err(LedgerError::Invalid(format!(
                "a credit must be positive, got {amount_micros}"
            )));
        }
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "INSERT INTO ledger_entries (tenant_id, amount_micros, kind, note, created_ms) \
             SELECT id, $1, 'credit', $2, $3 FROM tenants WHERE id = $4",
        )
        .bind(amount_micros)
        .bind(note)
        .bind(now_ms())
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(LedgerError::NotFound(format!("tenant {tenant_id}")));
        }
        add_to_balance(&mut tx, tenant_id, amount_micros).await?;
        let balance = balance_in(&mut tx, tenant_id).await?;
        tx.commit().await?;
        Ok(balance)
    }

    /// The tenant's balance (micro-units; may be below zero by at most its overdraft).
    pub async fn balance(&self, tenant_id: &str) -> Result<i64, LedgerError> {
        let mut conn = self.pool.acquire().await?;
        balance_in(&mut conn, tenant_id).await
    }

    /// The balance recomputed from the ledger entries (an audit of [`Ledger::balance`]).
    pub async fn ledger_sum(&self, tenant_id: &str) -> Result<i64, LedgerError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) AS s FROM ledger_entries \
             WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("s")?)
    }

    /// Sets a price from an instant on (requests that started earlier keep the old one).
    pub async fn set_price(
        &self,
        model: &str,
        mode: &str,
        token_class: &str,
        effective_ms: i64,
        micros_per_million: i64,
    ) -> Result<(), LedgerError> {
        if !TOKEN_CLASSES.contains(&token_class) {
            return Err(LedgerError::Invalid(format!(
                "token class {token_class:?}: expected one of {}",
                TOKEN_CLASSES.join(", ")
            )));
        }
        if micros_per_million < 0 {
            return Err(LedgerError::Invalid("a price cannot be negative".into()));
        }
        sqlx::query(
            "INSERT INTO prices (model, mode, token_class, effective_ms, micros_per_million) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model, mode, token_class, effective_ms) \
             DO UPDATE SET micros_per_million = excluded.micros_per_million",
        )
        .bind(model)
        .bind(mode)
        .bind(token_class)
        .bind(effective_ms)
        .bind(micros_per_million)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn prices(&self, conn: &mut sqlx::AnyConnection) -> Result<Prices, LedgerError> {
        let rows = sqlx::query(
            "SELECT model, mode, token_class, effective_ms, micros_per_million FROM prices \
             ORDER BY effective_ms",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut map: Prices = BTreeMap::new();
        for r in &rows {
            map.entry((
                r.try_get("model")?,
                r.try_get("mode")?,
                r.try_get("token_class")?,
            ))
            .or_default()
            .push((r.try_get("effective_ms")?, r.try_get("micros_per_million")?));
        }
        Ok(map)
    }

    /// Every price row: (model, mode, token class, effective ms, micro-units per 1M tokens).
    pub async fn list_prices(
        &self,
    ) -> Result<Vec<(String, String, String, i64, i64)>, LedgerError> {
        let rows = sqlx::query(
            "SELECT model, mode, token_class, effective_ms, micros_per_million FROM prices \
             ORDER BY model, mode, token_class, effective_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("model")?,
                    r.try_get("mode")?,
                    r.try_get("token_class")?,
                    r.try_get("effective_ms")?,
                    r.try_get("micros_per_million")?,
                ))
            })
            .collect()
    }

    /// The tenant named `name_or_id` (by id first, then by name).
    pub async fn find_tenant(&self, name_or_id: &str) -> Result<Tenant, LedgerError> {
        let row = sqlx::query(
            "SELECT id, name, overdraft_micros FROM tenants WHERE id = $1 OR name = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(name_or_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Tenant {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                overdraft_micros: r.try_get("overdraft_micros")?,
            }),
            None => Err(LedgerError::NotFound(format!("tenant {name_or_id:?}"))),
        }
    }

    /// The prices in force at `at_ms` (a class without a price costs 0).
    pub async fn price_at(
        &self,
        model: &str,
        mode: &str,
        at_ms: i64,
    ) -> Result<PriceSet, LedgerError> {
        let mut conn = self.pool.acquire().await?;
        let prices = self.prices(&mut conn).await?;
        Ok(price_set(&prices, model, mode, at_ms))
    }

    /// Records a batch of usage events in one transaction: each request id at most once
    /// (a request id already recorded, or repeated in the batch, changes nothing), its cost at
    /// the prices in force when it started, debited from the tenant its key belongs to. Either
    /// the whole batch is applied or nothing. A few statements per batch, not per event.
    pub async fn apply_usage(&self, events: &[UsageEvent]) -> Result<Vec<Applied>, LedgerError> {
        let mut tx = self.pool.begin().await?;
        let prices = self.prices(&mut tx).await?;
        let mut tenants: HashMap<String, Option<String>> = HashMap::new();
        for e in events {
            if !tenants.contains_key(&e.key_id) {
                let row = sqlx::query("SELECT tenant_id FROM api_keys WHERE id = $1")
                    .bind(&e.key_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let tenant = row
                    .map(|r| r.try_get::<String, _>("tenant_id"))
                    .transpose()?;
                tenants.insert(e.key_id.clone(), tenant);
            }
        }
        // What each event would record; the key decides the tenant (an event cannot bill
        // another tenant).
        let mut out = vec![Applied::Duplicate; events.len()];
        let mut rows: Vec<(usize, String, i64)> = Vec::new(); // (event, tenant, cost)
        let mut seen = std::collections::HashSet::new();
        for (i, e) in events.iter().enumerate() {
            match &tenants[&e.key_id] {
                None => out[i] = Applied::UnknownKey,
                Some(t) if seen.insert(e.request_id.as_str()) => {
                    let cost =
                        price_set(&prices, &e.model, e.mode.as_str(), e.started_ms).cost(&e.tokens);
                    rows.push((i, t.clone(), cost));
                }
                Some(_) => {} // repeated inside the batch
            }
        }
        let now = now_ms();
        let mut inserted = std::collections::HashSet::new();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = multi_row(
                "INSERT INTO usage_records (request_id, tenant_id, key_id, model, mode, status, \
                 started_ms, finished_ms, input_cache_hit, input_cache_miss, output_reasoning, \
                 output_answer, cost_micros, recorded_ms) VALUES ",
                14,
                chunk.len(),
                " ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (i, tenant, cost) in chunk {
                let e = &events[*i];
                let t = &e.tokens;
                q = q
                    .bind(e.request_id.clone())
                    .bind(tenant.clone())
                    .bind(e.key_id.clone())
                    .bind(e.model.clone())
                    .bind(e.mode.as_str())
                    .bind(e.status.as_str())
                    .bind(e.started_ms)
                    .bind(e.finished_ms)
                    .bind(t.input_cache_hit as i64)
                    .bind(t.input_cache_miss as i64)
                    .bind(t.output_reasoning as i64)
                    .bind(t.output_answer as i64)
                    .bind(*cost)
                    .bind(now);
            }
            for r in q.fetch_all(&mut *tx).await? {
                inserted.insert(r.try_get::<String, _>("request_id")?);
            }
        }
        let new: Vec<&(usize, String, i64)> = rows
            .iter()
            .filter(|(i, _, _)| inserted.contains(&events[*i].request_id))
            .collect();
        let mut per_tenant: BTreeMap<&str, i64> = BTreeMap::new();
        for chunk in new.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(usage_entries_sql(chunk.len())));
            for (i, tenant, cost) in chunk {
                q = q
                    .bind(tenant.clone())
                    .bind(-cost)
                    .bind(events[*i].request_id.clone())
                    .bind(now);
                *per_tenant.entry(tenant.as_str()).or_default() -= cost;
            }
            q.execute(&mut *tx).await?;
        }
        for (tenant, delta) in &per_tenant {
            add_to_balance(&mut tx, tenant, *delta).await?;
        }
        tx.commit().await?;
        for (i, _, cost) in new {
            out[*i] = Applied::Recorded { cost_micros: *cost };
        }
        Ok(out)
    }

    /// Usage of a tenant (optionally one key) between two instants, by UTC day, model and mode.
    pub async fn usage_report(
        &self,
        tenant_id: &str,
        key_id: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<UsageRow>, LedgerError> {
        let rows = sqlx::query(
            "SELECT started_ms / 86400000 AS day, model, mode, COUNT(*) AS requests, \
             CAST(SUM(input_cache_hit) AS BIGINT) AS hit, CAST(SUM(input_cache_miss) AS BIGINT) AS miss, \
             CAST(SUM(output_reasoning) AS BIGINT) AS reasoning, CAST(SUM(output_answer) AS BIGINT) AS answer, \
             CAST(SUM(cost_micros) AS BIGINT) AS cost \
             FROM usage_records WHERE tenant_id = $1 AND ($2 = '' OR key_id = $2) \
             AND started_ms >= $3 AND started_ms < $4 \
             GROUP BY started_ms / 86400000, model, mode ORDER BY day, model, mode",
        )
        .bind(tenant_id)
        .bind(key_id.unwrap_or(""))
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    day: r.try_get("day")?,
                    model: r.try_get("model")?,
                    mode: r.try_get("mode")?,
                    requests: r.try_get("requests")?,
                    input_cache_hit: r.try_get("hit")?,
                    input_cache_miss: r.try_get("miss")?,
                    output_reasoning: r.try_get("reasoning")?,
                    output_answer: r.try_get("answer")?,
                    cost_micros: r.try_get("cost")?,
                })
            })
            .collect()
    }
}

fn key_from_row(r: &AnyRow) -> Result<ApiKey, LedgerError> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        prefix: r.try_get("prefix")?,
        name: r.try_get("name")?,
        created_ms: r.try_get("created_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        revoked_ms: r.try_get("revoked_ms")?,
        limits: KeyLimits {
            requests_per_min: r.try_get("requests_per_min")?,
            tokens_per_min: r.try_get("tokens_per_min")?,
            max_concurrent: r.try_get("max_concurrent")?,
        },
    })
}

fn price_set(prices: &Prices, model: &str, mode: &str, at_ms: i64) -> PriceSet {
    let mut set = PriceSet::default();
    for (i, class) in TOKEN_CLASSES.iter().enumerate() {
        let key = (model.to_string(), mode.to_string(), class.to_string());
        if let Some(list) = prices.get(&key) {
            // Sorted by effective time: the last one not after `at_ms`.
            if let Some(&(_, p)) = list.iter().rev().find(|(from, _)| *from <= at_ms) {
                set.0[i] = p;
            }
        }
    }
    set
}

async fn add_to_balance(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
    delta: i64,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO balances (tenant_id, balance_micros) VALUES ($1, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET balance_micros = balances.balance_micros + excluded.balance_micros",
    )
    .bind(tenant_id)
    .bind(delta)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn balance_in(conn: &mut sqlx::AnyConnection, tenant_id: &str) -> Result<i64, LedgerError> {
    let row = sqlx::query("SELECT balance_micros FROM balances WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(r) => Ok(r.try_get("balance_micros")?),
        None => Err(LedgerError::NotFound(format!("tenant {tenant_id}"))),
    }
}

/// `url` without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
