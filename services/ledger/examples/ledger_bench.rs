//! Ledger writer throughput: usage events through JetStream into Postgres.
//!
//! ```sh
//! source scripts/services.sh
//! cargo run --release -p v4-ledger --example ledger_bench -- [--events 20000] [--batch 1000]
//! ```
//!
//! Publishes `--events` usage events (each acknowledged by the stream), then times one writer
//! draining them into a fresh Postgres database (batched transactions) and prints events/s.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use v4_bus::Bus;
use v4_ledger::{KeyLimits, Ledger, UsageStream, WriterConfig, run_writer};
use v4_protocol::generate::ReasoningMode;
use v4_protocol::usage::{TokenCounts, UsageEvent, UsageStatus};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let n = arg("--events", 20_000);
    let batch = arg("--batch", 1000);
    let admin = std::env::var("V4_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&admin).await.expect("Postgres");
    let db = format!("v4_ledger_test_bench_{}", v4_bus::short_token());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&pool)
        .await
        .unwrap();
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);
    let ledger = Ledger::connect(&url).await.unwrap();
    let tenant = ledger.create_tenant("bench", 0).await.unwrap();
    let (key, _) = ledger
        .create_key(&tenant.id, "k", None, KeyLimits::default())
        .await
        .unwrap();

    let nats =
        std::env::var("V4_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4333".to_string());
    let bus = Bus::connect(&nats, "ledger-bench")
        .await
        .unwrap()
        .with_namespace(&format!("bench{}", v4_bus::short_token()))
        .unwrap();
    let stream = UsageStream::open(&bus).await.unwrap();
    let t = Instant::now();
    let mut pending = Vec::new();
    for i in 0..n as u64 {
        let e = UsageEvent {
            request_id: format!("bench-{i}"),
            tenant_id: tenant.id.clone(),
            key_id: key.id.clone(),
            model: "deepseek-v4-flash".into(),
            mode: ReasoningMode::ThinkHigh,
            status: UsageStatus::Finished,
            started_ms: 1_790_000_000_000 + i as i64,
            finished_ms: 1_790_000_000_500 + i as i64,
            tokens: TokenCounts {
                input_cache_hit: 10,
                input_cache_miss: 200 + i % 100,
                output_reasoning: 300,
                output_answer: 120,
            },
        };
        let s = stream.clone();
        pending.push(tokio::spawn(async move { s.publish(&e).await }));
        if pending.len() >= 256 {
            for p in pending.drain(..) {
                p.await.unwrap().unwrap();
            }
        }
    }
    for p in pending.drain(..) {
        p.await.unwrap().unwrap();
    }
    let publish = t.elapsed();

    let (stop, rx) = watch::channel(false);
    let t = Instant::now();
    let writer = tokio::spawn(run_writer(
        stream.clone(),
        ledger.clone(),
        WriterConfig {
            batch,
            fetch_wait: Duration::from_millis(20),
            ..WriterConfig::default()
        },
        rx,
    ));
    while stream.pending().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain = t.elapsed();
    stop.send(true).unwrap();
    let stats = writer.await.unwrap().unwrap();
    assert_eq!(stats.recorded as usize, n);
    println!(
        "published {n} events in {:.2} s ({:.0}/s, each acknowledged by the stream)",
        publish.as_secs_f64(),
        n as f64 / publish.as_secs_f64()
    );
    println!(
        "ledger writer: {n} events into Postgres in {:.2} s = {:.0} events/s ({} batches of <= {batch})",
        drain.as_secs_f64(),
        n as f64 / drain.as_secs_f64(),
        stats.batches
    );
}
