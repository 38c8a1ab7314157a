//! Usage events through JetStream (the real NATS server of `scripts/services.sh`) into the
//! ledger (SQLite here; the store's exactly-once rule is tested on both backends in
//! `ledger.rs`): duplicates published, a writer that crashes between commit and ack, a second
//! writer taking over — every request is recorded exactly once and the balance is exact.

use std::time::Duration;

use tokio::sync::watch;
use v4_bus::Bus;
use v4_ledger::{KeyLimits, Ledger, UsageStream, WriterConfig, run_writer};
use v4_protocol::generate::ReasoningMode;
use v4_protocol::usage::{TokenCounts, UsageEvent, UsageStatus};

async fn nats() -> Bus {
    let url =
        std::env::var("V4_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4333".to_string());
    let bus = Bus::connect(&url, "ledger-tests").await.unwrap_or_else(|e| {
        panic!(
            "the NATS test server is unreachable ({e}); start it with `source scripts/services.sh`"
        )
    });
    bus.with_namespace(&format!("ledger{}", v4_bus::short_token()))
        .unwrap()
}

#[tokio::test]
async fn events_are_applied_exactly_once_across_a_writer_crash() {
    let dir = std::env::temp_dir().join(format!("v4-writer-{}", v4_bus::short_token()));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = Ledger::connect(&format!("sqlite://{}?mode=rwc", dir.join("l.db").display()))
        .await
        .unwrap();
    let tenant = ledger.create_tenant("acme", 0).await.unwrap();
    let (key, _) = ledger
        .create_key(&tenant.id, "k", None, KeyLimits::default())
        .await
        .unwrap();
    ledger
        .credit(&tenant.id, 10_000_000, "start")
        .await
        .unwrap();

    let bus = nats().await;
    let stream = UsageStream::open(&bus).await.unwrap();
    let events: Vec<UsageEvent> = (0..400u64)
        .map(|i| UsageEvent {
            request_id: format!("req-{i}"),
            tenant_id: tenant.id.clone(),
            key_id: key.id.clone(),
            model: "deepseek-v4-flash".into(),
            mode: ReasoningMode::NonThink,
            status: UsageStatus::Finished,
            started_ms: 1_790_000_000_000 + i as i64,
            finished_ms: 1_790_000_000_100 + i as i64,
            tokens: TokenCounts {
                input_cache_hit: i,
                input_cache_miss: 100 + i,
                output_reasoning: 0,
                output_answer: 50 + i % 7,
            },
        })
        .collect();
    for e in &events {
        stream.publish(e).await.unwrap();
    }
    // A publisher retrying after a lost acknowledgement: deduplicated by the stream.
    for e in &events[..50] {
        stream.publish(e).await.unwrap();
    }

    // Writer A commits its first batch and "crashes" before acknowledging it.
    let config = WriterConfig {
        batch: 100,
        ack_wait: Duration::from_secs(1),
        retry_backoff: Duration::from_millis(100),
        fetch_wait: Duration::from_millis(50),
        crash_after_batches: Some(1),
    };
    let (_stop_a, rx) = watch::channel(false);
    let a = run_writer(stream.clone(), ledger.clone(), config.clone(), rx)
        .await
        .unwrap();
    assert_eq!((a.batches, a.recorded), (1, 100));

    // Writer B takes over; the unacknowledged batch comes back as duplicates.
    let (stop, rx) = watch::channel(false);
    let b = tokio::spawn(run_writer(
        stream.clone(),
        ledger.clone(),
        WriterConfig {
            crash_after_batches: None,
            ..config
        },
        rx,
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stream.pending().await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the stream drains");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    let b = b.await.unwrap().unwrap();
    assert_eq!(a.recorded + b.recorded, 400);
    assert_eq!(
        b.duplicates, 100,
        "the crashed batch was redelivered and changed nothing"
    );

    let prices = ledger
        .price_at("deepseek-v4-flash", "non-think", 1_790_000_000_000)
        .await
        .unwrap();
    let cost: i64 = events.iter().map(|e| prices.cost(&e.tokens)).sum();
    assert_eq!(ledger.balance(&tenant.id).await.unwrap(), 10_000_000 - cost);
    assert_eq!(
        ledger.ledger_sum(&tenant.id).await.unwrap(),
        10_000_000 - cost
    );
    let report = ledger
        .usage_report(&tenant.id, None, 0, i64::MAX)
        .await
        .unwrap();
    let sum = |f: fn(&TokenCounts) -> u64| events.iter().map(|e| f(&e.tokens) as i64).sum::<i64>();
    let total_requests: i64 = report.iter().map(|r| r.requests).sum();
    assert_eq!(total_requests, 400);
    assert_eq!(
        report.iter().map(|r| r.input_cache_miss).sum::<i64>(),
        sum(|t| t.input_cache_miss)
    );
    assert_eq!(
        report.iter().map(|r| r.output_answer).sum::<i64>(),
        sum(|t| t.output_answer)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
