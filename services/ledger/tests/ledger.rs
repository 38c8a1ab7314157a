//! The ledger on both backends: real Postgres (`V4_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, a fresh database per test) and SQLite (a
//! fresh file). Exactly-once recording, balances to the micro-unit, prices by start time, keys
//! stored only as hashes, per-tenant reports.

use sqlx::Row;
use v4_ledger::{Applied, KeyLimits, Ledger, TOKEN_CLASSES};
use v4_protocol::generate::ReasoningMode;
use v4_protocol::usage::{TokenCounts, UsageEvent, UsageStatus};

struct Backend {
    name: &'static str,
    ledger: Ledger,
    _dir: Option<tempfile_dir::Dir>,
}

mod tempfile_dir {
    /// A temporary directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn postgres() -> Ledger {
    let admin_url = std::env::var("V4_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!(
            "Postgres is unreachable at {admin_url} ({e}); `source scripts/services.sh` starts it \
             (or point V4_TEST_POSTGRES_URL at one)"
        )
    });
    let db = format!(
        "v4_ledger_test_{}",
        v4_ledger::keys::new_id("db").unwrap().replace("db_", "")
    );
    // The name is ours (hex digits), not input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&admin)
        .await
        .unwrap();
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("V4_TEST_POSTGRES_URL must name a database"),
    };
    Ledger::connect(&url).await.unwrap()
}

async fn backends() -> Vec<Backend> {
    let dir = std::env::temp_dir().join(format!(
        "v4-ledger-{}",
        v4_ledger::keys::new_id("t").unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = Ledger::connect(&format!("sqlite://{}?mode=rwc", dir.join("l.db").display()))
        .await
        .unwrap();
    vec![
        Backend {
            name: "postgres",
            ledger: postgres().await,
            _dir: None,
        },
        Backend {
            name: "sqlite",
            ledger: sqlite,
            _dir: Some(tempfile_dir::Dir(dir)),
        },
    ]
}

fn event(id: &str, tenant: &str, key: &str, model: &str, started_ms: i64, n: u64) -> UsageEvent {
    UsageEvent {
        request_id: id.to_string(),
        tenant_id: tenant.to_string(),
        key_id: key.to_string(),
        model: model.to_string(),
        mode: ReasoningMode::ThinkHigh,
        status: UsageStatus::Finished,
        started_ms,
        finished_ms: started_ms + 10,
        tokens: TokenCounts {
            input_cache_hit: n,
            input_cache_miss: 3 * n,
            output_reasoning: 2 * n,
            output_answer: n + 1,
        },
    }
}

const T0: i64 = 1_790_000_000_000; // 2026-09-21, after the default prices took effect

#[tokio::test]
async fn every_request_is_recorded_once_and_balances_add_up() {
    for b in backends().await {
        let l = &b.ledger;
        let tenant = l.create_tenant("acme", 0).await.unwrap();
        let (key, _) = l
            .create_key(&tenant.id, "main", None, KeyLimits::default())
            .await
            .unwrap();
        assert_eq!(
            l.credit(&tenant.id, 5_000_000, "top-up").await.unwrap(),
            5_000_000
        );
        let events: Vec<UsageEvent> = (0..50)
            .map(|i| {
                event(
                    &format!("r{i}"),
                    &tenant.id,
                    &key.id,
                    "deepseek-v4-pro",
                    T0 + i,
                    1000 + i as u64,
                )
            })
            .collect();
        // Duplicates inside one batch and across batches (redeliveries).
        let mut batch = events[..30].to_vec();
        batch.extend_from_slice(&events[..5]);
        let first = l.apply_usage(&batch).await.unwrap();
        assert_eq!(
            first
                .iter()
                .filter(|a| matches!(a, Applied::Recorded { .. }))
                .count(),
            30
        );
        assert_eq!(
            first.iter().filter(|a| **a == Applied::Duplicate).count(),
            5
        );
        let second = l.apply_usage(&events[20..]).await.unwrap();
        assert_eq!(
            second
                .iter()
                .filter(|a| matches!(a, Applied::Recorded { .. }))
                .count(),
            20
        );
        // Concurrent redelivery of everything changes nothing.
        let again = futures_join(l, &events).await;
        assert!(again.iter().all(|a| *a == Applied::Duplicate), "{}", b.name);

        let prices = l
            .price_at("deepseek-v4-pro", "think-high", T0)
            .await
            .unwrap();
        assert_eq!(prices.0, [14_500, 1_740_000, 3_480_000, 3_480_000]);
        let cost: i64 = events.iter().map(|e| prices.cost(&e.tokens)).sum();
        assert_eq!(
            l.balance(&tenant.id).await.unwrap(),
            5_000_000 - cost,
            "{}",
            b.name
        );
        assert_eq!(l.ledger_sum(&tenant.id).await.unwrap(), 5_000_000 - cost);
        let report = l.usage_report(&tenant.id, None, 0, i64::MAX).await.unwrap();
        assert_eq!(report.len(), 1);
        let r = &report[0];
        assert_eq!(r.requests, 50);
        let tokens =
            |f: fn(&TokenCounts) -> u64| events.iter().map(|e| f(&e.tokens) as i64).sum::<i64>();
        assert_eq!(r.input_cache_hit, tokens(|t| t.input_cache_hit));
        assert_eq!(r.input_cache_miss, tokens(|t| t.input_cache_miss));
        assert_eq!(r.output_reasoning, tokens(|t| t.output_reasoning));
        assert_eq!(r.output_answer, tokens(|t| t.output_answer));
        assert_eq!(r.cost_micros, cost);
        assert_eq!(r.day, T0 / 86_400_000);
    }
}

async fn futures_join(l: &Ledger, events: &[UsageEvent]) -> Vec<Applied> {
    let mut handles = Vec::new();
    for chunk in events.chunks(10) {
        let (l, chunk) = (l.clone(), chunk.to_vec());
        handles.push(tokio::spawn(
            async move { l.apply_usage(&chunk).await.unwrap() },
        ));
    }
    let mut out = Vec::new();
    for h in handles {
        out.extend(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_price_change_applies_to_requests_started_after_it() {
    for b in backends().await {
        let l = &b.ledger;
        let tenant = l.create_tenant("t", 0).await.unwrap();
        let (key, _) = l
            .create_key(&tenant.id, "k", None, KeyLimits::default())
            .await
            .unwrap();
        let change = T0 + 1_000;
        for class in TOKEN_CLASSES {
            l.set_price("deepseek-v4-flash", "think-high", class, change, 1_000_000)
                .await
                .unwrap();
        }
        let before = event(
            "before",
            &tenant.id,
            &key.id,
            "deepseek-v4-flash",
            change - 1,
            1000,
        );
        let after = event(
            "after",
            &tenant.id,
            &key.id,
            "deepseek-v4-flash",
            change,
            1000,
        );
        let applied = l
            .apply_usage(&[before.clone(), after.clone()])
            .await
            .unwrap();
        let old = l
            .price_at("deepseek-v4-flash", "think-high", change - 1)
            .await
            .unwrap();
        assert_eq!(old.0, [2800, 140_000, 280_000, 280_000], "{}", b.name);
        assert_eq!(
            applied[0],
            Applied::Recorded {
                cost_micros: old.cost(&before.tokens)
            }
        );
        // 1000 + 3000 + 2000 + 1001 tokens at $1/1M each.
        assert_eq!(applied[1], Applied::Recorded { cost_micros: 7001 });
        // An unknown key bills nobody.
        let stray = event("stray", &tenant.id, "key_nope", "deepseek-v4-flash", T0, 1);
        assert_eq!(
            l.apply_usage(&[stray]).await.unwrap(),
            [Applied::UnknownKey]
        );
        assert!(
            l.set_price("m", "think-high", "output", 0, 1)
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn keys_are_stored_as_hashes_and_revocation_and_expiry_hold() {
    for b in backends().await {
        let l = &b.ledger;
        let a = l.create_tenant("a", 100).await.unwrap();
        let other = l.create_tenant("b", 0).await.unwrap();
        let (key, secret) = l
            .create_key(
                &a.id,
                "ci",
                None,
                KeyLimits {
                    requests_per_min: Some(60),
                    ..KeyLimits::default()
                },
            )
            .await
            .unwrap();
        let found = l.find_key(&secret).await.unwrap().unwrap();
        assert_eq!(found, key);
        assert!(found.is_active(v4_ledger::now_ms()));
        assert!(l.find_key("sk-v4-wrong").await.unwrap().is_none());
        // No column of any key row holds the secret or its visible part beyond the prefix.
        let rows = sqlx::query("SELECT id, tenant_id, prefix, secret_sha256, name FROM api_keys")
            .fetch_all(l.pool())
            .await
            .unwrap();
        for r in &rows {
            for c in ["id", "tenant_id", "prefix", "secret_sha256", "name"] {
                let v: String = r.try_get(c).unwrap();
                assert!(
                    !v.contains(&secret[8..]),
                    "{}: column {c} holds the secret",
                    b.name
                );
            }
        }
        l.revoke_key(&key.id).await.unwrap();
        let revoked = l.find_key(&secret).await.unwrap().unwrap();
        assert!(!revoked.is_active(v4_ledger::now_ms()));
        let (_, expiring) = l
            .create_key(
                &a.id,
                "old",
                Some(v4_ledger::now_ms() - 1),
                KeyLimits::default(),
            )
            .await
            .unwrap();
        assert!(
            !l.find_key(&expiring)
                .await
                .unwrap()
                .unwrap()
                .is_active(v4_ledger::now_ms())
        );
        assert!(
            l.create_key("tn_missing", "x", None, KeyLimits::default())
                .await
                .is_err()
        );
        // Reports are per tenant.
        let (kb, _) = l
            .create_key(&other.id, "b", None, KeyLimits::default())
            .await
            .unwrap();
        l.apply_usage(&[event("x1", &other.id, &kb.id, "deepseek-v4-flash", T0, 5)])
            .await
            .unwrap();
        assert!(
            l.usage_report(&a.id, None, 0, i64::MAX)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            l.usage_report(&other.id, Some(&kb.id), 0, i64::MAX)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(l.credit(&a.id, 0, "zero").await.is_err());
        assert!(l.credit("tn_missing", 5, "x").await.is_err());
        assert_eq!(l.tenants().await.unwrap().len(), 2);
        assert_eq!(l.keys(&a.id).await.unwrap().len(), 2);
    }
}
