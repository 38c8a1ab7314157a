//! Postgres goes away mid-run and comes back: the events wait in JetStream and are applied
//! when it returns — none lost, none applied twice. The outage is made by a TCP proxy between
//! the writer and Postgres that drops every connection and refuses new ones (the shared test
//! Postgres itself keeps running for the other tests).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use v4_bus::Bus;
use v4_ledger::{KeyLimits, Ledger, UsageStream, WriterConfig, run_writer};
use v4_protocol::generate::ReasoningMode;
use v4_protocol::usage::{TokenCounts, UsageEvent, UsageStatus};

/// A TCP proxy that can be switched off (all connections cut, new ones refused).
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (u, c, target) = (up.clone(), conns.clone(), upstream.to_string());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !u.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                c.lock().unwrap().push(h.abort_handle());
            }
        });
        Proxy { port, up, conns }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for h in self.conns.lock().unwrap().drain(..) {
                h.abort();
            }
        }
    }
}

fn event(i: u64, tenant: &str, key: &str) -> UsageEvent {
    UsageEvent {
        request_id: format!("o-{i}"),
        tenant_id: tenant.to_string(),
        key_id: key.to_string(),
        model: "deepseek-v4-pro".into(),
        mode: ReasoningMode::ThinkMax,
        status: UsageStatus::Finished,
        started_ms: 1_790_000_000_000 + i as i64,
        finished_ms: 1_790_000_001_000 + i as i64,
        tokens: TokenCounts {
            input_cache_hit: 7,
            input_cache_miss: 90 + i % 13,
            output_reasoning: 40,
            output_answer: 11 + i % 5,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_database_outage() {
    let admin = std::env::var("V4_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&admin).await.unwrap_or_else(|e| {
        panic!("Postgres is unreachable at {admin} ({e}); `source scripts/services.sh` starts it")
    });
    let db = format!("v4_ledger_test_outage_{}", v4_bus::short_token());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&pool)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    let host_port = base.rsplit_once('@').map_or(base, |(_, h)| h).to_string();
    let direct = Ledger::connect(&format!("{base}/{db}")).await.unwrap();
    let tenant = direct.create_tenant("outage", 0).await.unwrap();
    let (key, _) = direct
        .create_key(&tenant.id, "k", None, KeyLimits::default())
        .await
        .unwrap();
    direct
        .credit(&tenant.id, 50_000_000, "start")
        .await
        .unwrap();

    let proxy = Proxy::start(&host_port).await;
    let user = base
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map_or("postgres", |(u, _)| u);
    let via_proxy = Ledger::connect(&format!("postgres://{user}@127.0.0.1:{}/{db}", proxy.port))
        .await
        .unwrap();

    let url =
        std::env::var("V4_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4333".to_string());
    let bus = Bus::connect(&url, "ledger-outage")
        .await
        .expect("the NATS test server (scripts/services.sh)")
        .with_namespace(&format!("outage{}", v4_bus::short_token()))
        .unwrap();
    let stream = UsageStream::open(&bus).await.unwrap();
    let events: Vec<UsageEvent> = (0..600).map(|i| event(i, &tenant.id, &key.id)).collect();
    for e in &events[..200] {
        stream.publish(e).await.unwrap();
    }
    let (stop, rx) = watch::channel(false);
    let writer = tokio::spawn(run_writer(
        stream.clone(),
        via_proxy.clone(),
        WriterConfig {
            batch: 50,
            fetch_wait: Duration::from_millis(20),
            ack_wait: Duration::from_secs(2),
            retry_backoff: Duration::from_millis(200),
            crash_after_batches: None,
        },
        rx,
    ));
    let wait_for = |n: u64| {
        let stream = stream.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while stream.pending().await.unwrap() > n {
                assert!(tokio::time::Instant::now() < deadline, "the stream drains");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(0).await;
    // "Postgres stops": every connection is cut; events keep arriving.
    proxy.set_up(false);
    for e in &events[200..500] {
        stream.publish(e).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        stream.pending().await.unwrap() >= 300,
        "nothing applied while the database is down"
    );
    // Duplicated deliveries while it is down (a publisher retrying).
    for e in &events[150..250] {
        stream.publish(e).await.unwrap();
    }
    proxy.set_up(true);
    for e in &events[500..] {
        stream.publish(e).await.unwrap();
    }
    wait_for(0).await;
    stop.send(true).unwrap();
    let stats = writer.await.unwrap().unwrap();
    assert!(stats.failed_transactions >= 1, "{stats:?}");
    assert_eq!(stats.recorded, 600, "{stats:?}");

    let prices = direct
        .price_at("deepseek-v4-pro", "think-max", 1_790_000_000_000)
        .await
        .unwrap();
    let cost: i64 = events.iter().map(|e| prices.cost(&e.tokens)).sum();
    assert_eq!(direct.balance(&tenant.id).await.unwrap(), 50_000_000 - cost);
    assert_eq!(
        direct.ledger_sum(&tenant.id).await.unwrap(),
        50_000_000 - cost
    );
    let report = direct
        .usage_report(&tenant.id, None, 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(report.iter().map(|r| r.requests).sum::<i64>(), 600);
}
