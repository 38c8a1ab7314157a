//! `v4 admin`: the operator's ledger commands (tenants, keys, prices, credits, usage).
//!
//! Every command takes `--ledger URL` (or `V4_LEDGER_URL`): `postgres://…` for the mesh,
//! `sqlite://PATH?mode=rwc` for the all-in-one (default `sqlite://data/ledger.db?mode=rwc`).
//! Amounts are decimal currency units (`12.50`), stored as integer micro-units.

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use v4_ledger::money::{format_micros, parse_micros};
use v4_ledger::{KeyLimits, Ledger, TOKEN_CLASSES, now_ms};

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The ledger database.
    #[arg(
        long,
        env = "V4_LEDGER_URL",
        default_value = "sqlite://data/ledger.db?mode=rwc"
    )]
    pub ledger: String,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Tenants: `list`, `create NAME [--overdraft AMOUNT]`.
    Tenants {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// API keys: `list TENANT`, `create TENANT`, `revoke KEY_ID`, `limits KEY_ID`.
    Keys {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Prices: `list`, `set MODEL MODE CLASS AMOUNT_PER_1M [--from UNIX_MS]`.
    Prices {
        #[command(subcommand)]
        command: PriceCommand,
    },
    /// Credit a tenant's balance.
    Credit {
        tenant: String,
        /// Decimal amount (e.g. 25.00).
        amount: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// A tenant's balance.
    Balance { tenant: String },
    /// Usage and cost by UTC day, model and mode.
    Usage {
        tenant: String,
        /// Only this key.
        #[arg(long)]
        key: Option<String>,
        /// From this instant (Unix ms; default: the beginning).
        #[arg(long, default_value_t = 0)]
        from_ms: i64,
        /// Until this instant (Unix ms, exclusive; default: now).
        #[arg(long)]
        to_ms: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    List,
    Create {
        name: String,
        /// How far the balance may go negative through requests already running.
        #[arg(long, default_value = "0")]
        overdraft: String,
    },
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<i64>,
    /// Tokens per minute.
    #[arg(long)]
    pub tpm: Option<i64>,
    /// Concurrent requests.
    #[arg(long)]
    pub concurrency: Option<i64>,
}

impl LimitArgs {
    fn limits(&self) -> KeyLimits {
        KeyLimits {
            requests_per_min: self.rpm,
            tokens_per_min: self.tpm,
            max_concurrent: self.concurrency,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    List {
        tenant: String,
    },
    /// Creates a key and prints its secret (shown this once only).
    Create {
        tenant: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Expires after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    Revoke {
        key_id: String,
    },
    /// Replaces a key's limits (unset = unlimited).
    Limits {
        key_id: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum PriceCommand {
    List,
    Set {
        model: String,
        /// non-think, think-high or think-max.
        mode: String,
        /// input_cache_hit, input_cache_miss, output_reasoning or output_answer.
        class: String,
        /// Price per 1M tokens (decimal, e.g. 0.14).
        amount: String,
        /// Effective from this instant (Unix ms; default: now).
        #[arg(long)]
        from_ms: Option<i64>,
    },
}

pub fn run(a: &AdminArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(a))
}

fn ensure_sqlite_dir(url: &str) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(dir) = std::path::Path::new(path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
    }
}

async fn run_async(a: &AdminArgs) -> Result<()> {
    ensure_sqlite_dir(&a.ledger);
    let l = Ledger::connect(&a.ledger).await?;
    match &a.command {
        AdminCommand::Tenants { command } => match command {
            TenantCommand::List => {
                for t in l.tenants().await? {
                    let balance = l.balance(&t.id).await?;
                    println!(
                        "{}\t{}\tbalance {}\toverdraft {}",
                        t.id,
                        t.name,
                        format_micros(balance),
                        format_micros(t.overdraft_micros)
                    );
                }
            }
            TenantCommand::Create { name, overdraft } => {
                let o = parse_micros(overdraft).map_err(|e| anyhow!("--overdraft: {e}"))?;
                let t = l.create_tenant(name, o).await?;
                println!("{}\t{}", t.id, t.name);
            }
        },
        AdminCommand::Keys { command } => match command {
            KeyCommand::List { tenant } => {
                let t = l.find_tenant(tenant).await?;
                let now = now_ms();
                for k in l.keys(&t.id).await? {
                    let state = if k.revoked_ms.is_some() {
                        "revoked"
                    } else if !k.is_active(now) {
                        "expired"
                    } else {
                        "active"
                    };
                    println!(
                        "{}\t{}…\t{}\t{state}\trpm {:?}\ttpm {:?}\tconcurrency {:?}",
                        k.id,
                        k.prefix,
                        k.name,
                        k.limits.requests_per_min,
                        k.limits.tokens_per_min,
                        k.limits.max_concurrent
                    );
                }
            }
            KeyCommand::Create {
                tenant,
                name,
                expires_in_days,
                limits,
            } => {
                let t = l.find_tenant(tenant).await?;
                let expires = expires_in_days.map(|d| now_ms() + d as i64 * 86_400_000);
                let (k, secret) = l.create_key(&t.id, name, expires, limits.limits()).await?;
                println!("key id: {}", k.id);
                println!("secret: {secret}");
                eprintln!("(the secret is shown this once; only its hash is stored)");
            }
            KeyCommand::Revoke { key_id } => {
                l.revoke_key(key_id).await?;
                println!("revoked {key_id}");
            }
            KeyCommand::Limits { key_id, limits } => {
                l.set_limits(key_id, limits.limits()).await?;
                println!("limits of {key_id} set");
            }
        },
        AdminCommand::Prices { command } => match command {
            PriceCommand::List => {
                for (model, mode, class, from, p) in l.list_prices().await? {
                    println!(
                        "{model}\t{mode}\t{class}\tfrom {from}\t{} per 1M",
                        format_micros(p)
                    );
                }
            }
            PriceCommand::Set {
                model,
                mode,
                class,
                amount,
                from_ms,
            } => {
                if !["non-think", "think-high", "think-max"].contains(&mode.as_str()) {
                    return Err(anyhow!(
                        "mode {mode:?}: expected non-think, think-high or think-max"
                    ));
                }
                if !TOKEN_CLASSES.contains(&class.as_str()) {
                    return Err(anyhow!(
                        "class {class:?}: expected one of {}",
                        TOKEN_CLASSES.join(", ")
                    ));
                }
                let p = parse_micros(amount).map_err(|e| anyhow!("amount: {e}"))?;
                let from = from_ms.unwrap_or_else(now_ms);
                l.set_price(model, mode, class, from, p).await?;
                println!(
                    "{model} {mode} {class}: {} per 1M from {from}",
                    format_micros(p)
                );
            }
        },
        AdminCommand::Credit {
            tenant,
            amount,
            note,
        } => {
            let t = l.find_tenant(tenant).await?;
            let m = parse_micros(amount).map_err(|e| anyhow!("amount: {e}"))?;
            let balance = l.credit(&t.id, m, note).await?;
            println!("{}\tbalance {}", t.id, format_micros(balance));
        }
        AdminCommand::Balance { tenant } => {
            let t = l.find_tenant(tenant).await?;
            println!("{}\t{}", t.id, format_micros(l.balance(&t.id).await?));
        }
        AdminCommand::Usage {
            tenant,
            key,
            from_ms,
            to_ms,
        } => {
            let t = l.find_tenant(tenant).await?;
            let rows = l
                .usage_report(&t.id, key.as_deref(), *from_ms, to_ms.unwrap_or(i64::MAX))
                .await?;
            println!("day\tmodel\tmode\trequests\tcache_hit\tcache_miss\treasoning\tanswer\tcost");
            for r in rows {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    day(r.day),
                    r.model,
                    r.mode,
                    r.requests,
                    r.input_cache_hit,
                    r.input_cache_miss,
                    r.output_reasoning,
                    r.output_answer,
                    format_micros(r.cost_micros)
                );
            }
        }
    }
    Ok(())
}

/// Days since the epoch → `YYYY-MM-DD` (proleptic Gregorian, UTC).
fn day(days: i64) -> String {
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{:04}-{m:02}-{d:02}", if m <= 2 { y + 1 } else { y })
}

#[cfg(test)]
mod tests {
    #[test]
    fn days_format_as_dates() {
        assert_eq!(super::day(0), "1970-01-01");
        assert_eq!(super::day(20_454), "2026-01-01");
        assert_eq!(super::day(1_790_000_000_000 / 86_400_000), "2026-09-21");
    }
}
