//! One test suite, run against both buses: the in-process bus and a real NATS server
//! (`V4_TEST_NATS_URL`, default `nats://127.0.0.1:4333`, started by `scripts/services.sh`).
//! An unreachable NATS server fails the NATS half loudly; it is never skipped.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use v4_bus::{Bus, BusError, CallError, Headers, Message, ServiceError, SizeBudget, Subscription};
use v4_protocol::ErrorKind;
use v4_protocol::chunk::{CHUNK_HEADER, STATUS_HEADER, TRANSFER_HEADER, UPLOAD_HEADER};

const T: Duration = Duration::from_secs(5);

/// How a test gets bus handles: in process, every handle is the same bus; on NATS, every
/// handle is its own connection (so messages really cross the server).
enum Env {
    InProc(Bus),
    Nats(String),
}

impl Env {
    fn in_process() -> Env {
        Env::InProc(Bus::in_process())
    }

    fn nats() -> Env {
        let url = std::env::var("V4_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4333".to_string());
        Env::Nats(url)
    }

    async fn bus(&self) -> Bus {
        match self {
            Env::InProc(b) => b.clone(),
            Env::Nats(url) => match tokio::time::timeout(
                Duration::from_secs(10),
                Bus::connect(url, "v4-bus-tests"),
            )
            .await
            {
                Ok(Ok(bus)) => bus,
                Ok(Err(e)) => panic!(
                    "the NATS test server is unreachable ({e}); start it with \
                     `source scripts/services.sh` or point V4_TEST_NATS_URL at one"
                ),
                Err(_) => panic!("connecting to the NATS test server at {url} timed out"),
            },
        }
    }
}

/// A subject prefix unique to one test run (the NATS server is shared).
fn prefix() -> String {
    format!("test.{}", v4_bus::unique_token())
}

async fn next(sub: &mut Subscription) -> Message {
    tokio::time::timeout(T, sub.next())
        .await
        .expect("timed out waiting for a message")
        .expect("subscription ended")
}

async fn nothing_more(sub: &mut Subscription) {
    let extra = tokio::time::timeout(Duration::from_millis(150), sub.next()).await;
    assert!(extra.is_err(), "unexpected message: {extra:?}");
}

async fn publish_subscribe_with_headers(env: Env) {
    let (a, b) = (env.bus().await, env.bus().await);
    let p = prefix();
    let mut sub = b.subscribe(&format!("{p}.x")).await.unwrap();
    let h = Headers::new().with(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    a.publish(&format!("{p}.x"), &h, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.subject, format!("{p}.x"));
    assert_eq!(&m.payload[..], b"hello");
    assert_eq!(m.headers.get("traceparent"), h.get("traceparent"));
    assert_eq!(m.reply, None);
    assert!(matches!(
        b.respond(&m, &Headers::new(), Bytes::new()).await,
        Err(BusError::NoReplySubject { .. })
    ));
}

async fn wildcards(env: Env) {
    let (a, b) = (env.bus().await, env.bus().await);
    let p = prefix();
    let mut star = b.subscribe(&format!("{p}.*.feed")).await.unwrap();
    let mut tail = b.subscribe(&format!("{p}.>")).await.unwrap();
    for s in ["i1.feed", "i1.close", "i1.feed.x", "i2.feed"] {
        a.publish(&format!("{p}.{s}"), &Headers::new(), Bytes::from(s))
            .await
            .unwrap();
    }
    let got_star = [next(&mut star).await, next(&mut star).await];
    assert_eq!(
        got_star.map(|m| m.subject),
        [format!("{p}.i1.feed"), format!("{p}.i2.feed")]
    );
    nothing_more(&mut star).await;
    for s in ["i1.feed", "i1.close", "i1.feed.x", "i2.feed"] {
        assert_eq!(next(&mut tail).await.subject, format!("{p}.{s}"));
    }
    // `>` needs at least one token.
    a.publish(&p, &Headers::new(), Bytes::new()).await.unwrap();
    nothing_more(&mut tail).await;
}

async fn queue_groups_share_and_plain_subscribers_see_all(env: Env) {
    let (a, b, c) = (env.bus().await, env.bus().await, env.bus().await);
    let p = prefix();
    let subject = format!("{p}.work");
    let mut m1 = b.queue_subscribe(&subject, "workers").await.unwrap();
    let mut m2 = c.queue_subscribe(&subject, "workers").await.unwrap();
    let mut all = c.subscribe(&subject).await.unwrap();
    const N: usize = 200;
    for i in 0..N {
        a.publish(&subject, &Headers::new(), Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    a.flush().await.unwrap();
    let (mut n1, mut n2) = (0, 0);
    let mut seen = std::collections::HashSet::new();
    while n1 + n2 < N {
        tokio::select! {
            Some(m) = m1.next() => { n1 += 1; assert!(seen.insert(m.payload)); }
            Some(m) = m2.next() => { n2 += 1; assert!(seen.insert(m.payload)); }
            _ = tokio::time::sleep(T) => panic!("queue group got {n1}+{n2} of {N}"),
        }
    }
    assert!(n1 > 0 && n2 > 0, "one member got everything: {n1} / {n2}");
    nothing_more(&mut m1).await;
    nothing_more(&mut m2).await;
    for _ in 0..N {
        next(&mut all).await;
    }
}

async fn request_reply_and_typed_errors(env: Env) {
    let (a, b) = (env.bus().await, env.bus().await);
    let p = prefix();
    let mut sub = b.subscribe(&format!("{p}.echo")).await.unwrap();
    let responder = tokio::spawn(async move {
        let m = next(&mut sub).await;
        let h = Headers::new().with("x-echo", m.headers.get("x-in").unwrap_or("-"));
        b.respond(&m, &h, m.payload.clone()).await.unwrap();
        sub
    });
    let h = Headers::new().with("x-in", "1");
    let r = a
        .request(&format!("{p}.echo"), &h, Bytes::from_static(b"ping"), T)
        .await
        .unwrap();
    assert_eq!(&r.payload[..], b"ping");
    assert_eq!(r.headers.get("x-echo"), Some("1"));
    let _sub = responder.await.unwrap();

    // A subscriber that never answers: a typed timeout.
    let t = Duration::from_millis(200);
    let err = a
        .request(&format!("{p}.echo"), &Headers::new(), Bytes::new(), t)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BusError::Timeout {
            subject: format!("{p}.echo"),
            timeout: t
        }
    );
    // Nobody subscribed: "no responders", at once.
    let started = std::time::Instant::now();
    let err = a
        .request(&format!("{p}.nobody"), &Headers::new(), Bytes::new(), T)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BusError::NoResponders {
            subject: format!("{p}.nobody")
        }
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

async fn payload_budget_is_enforced(env: Env) {
    let a = env.bus().await;
    let p = prefix();
    let limit = a.budget().payload_limit();
    assert_eq!(limit, 1024 * 1024 - v4_protocol::HEADER_ROOM);
    let _sub = a.subscribe(&format!("{p}.big")).await.unwrap();
    let ok = Bytes::from(vec![b'x'; limit]);
    a.publish(&format!("{p}.big"), &Headers::new(), ok)
        .await
        .unwrap();
    let big = Bytes::from(vec![b'x'; limit + 1]);
    let want = BusError::PayloadTooLarge(v4_protocol::PayloadTooLarge {
        subject: format!("{p}.big"),
        bytes: limit + 1,
        limit,
    });
    let err = a
        .publish(&format!("{p}.big"), &Headers::new(), big.clone())
        .await
        .unwrap_err();
    assert_eq!(err, want);
    let err = a
        .request(&format!("{p}.big"), &Headers::new(), big, T)
        .await
        .unwrap_err();
    assert_eq!(err, want);
}

async fn invalid_subjects_and_headers(env: Env) {
    let a = env.bus().await;
    for bad in ["", "a..b", "a b", "a.*", "a.>"] {
        let err = a.publish(bad, &Headers::new(), Bytes::new()).await;
        assert!(
            matches!(err, Err(BusError::InvalidSubject { .. })),
            "{bad:?}"
        );
    }
    for bad in ["a.>.b", "a.b*", ""] {
        assert!(matches!(
            a.subscribe(bad).await,
            Err(BusError::InvalidSubject { .. })
        ));
    }
    assert!(matches!(
        a.queue_subscribe("a.b", "bad group").await,
        Err(BusError::InvalidQueueGroup { .. })
    ));
    let h = Headers::new().with("x", "a\r\nb");
    assert!(matches!(
        a.publish("a.b", &h, Bytes::new()).await,
        Err(BusError::InvalidHeader { .. })
    ));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Echo {
    text: String,
    #[serde(default)]
    fail: bool,
    #[serde(default)]
    repeat: usize,
}

async fn echo_server(bus: &Bus, subject: &str) -> v4_bus::Server {
    bus.serve_json(subject, Some("echo"), |req: Echo, ctx| async move {
        if req.fail {
            return Err(ServiceError::not_found(format!("no {}", req.text)).with_param("text"));
        }
        let trace = ctx.headers.get("traceparent").unwrap_or("").to_string();
        let text = if req.repeat > 0 {
            req.text.repeat(req.repeat)
        } else {
            format!("{}{}", req.text, trace)
        };
        Ok(Echo {
            text,
            fail: false,
            repeat: 0,
        })
    })
    .await
    .unwrap()
}

async fn json_round_trip_and_service_errors(env: Env) {
    let (a, b) = (env.bus().await, env.bus().await);
    let subject = format!("{}.echo", prefix());
    let server = echo_server(&b, &subject).await;
    let req = Echo {
        text: "hi".into(),
        fail: false,
        repeat: 0,
    };
    let h = Headers::new().with("traceparent", "-t");
    let rep: Echo = a
        .request_json_with_headers(&subject, h, &req, T)
        .await
        .unwrap();
    assert_eq!(rep.text, "hi-t");
    let failing = Echo {
        fail: true,
        ..req.clone()
    };
    let err = a
        .request_json::<_, Echo>(&subject, &failing, T)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Service(ServiceError::not_found("no hi").with_param("text"))
    );
    // A body that is not an `Echo`: bad_request, naming the subject.
    let err = a
        .request_json::<_, Echo>(&subject, &serde_json::json!({"txt": 1}), T)
        .await
        .unwrap_err();
    let e = err.service_error().expect("a service error");
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(e.message.contains(&subject), "{e}");
    server.drain().await;
}

async fn chunked_requests_and_replies(env: Env) {
    let budget = SizeBudget {
        max_payload: 64 * 1024,
        header_room: 4096,
        max_transfer: 16 * 1024 * 1024,
    };
    let a = env.bus().await.with_budget(budget);
    let b = env.bus().await.with_budget(budget);
    let subject = format!("{}.echo", prefix());
    let server = echo_server(&b, &subject).await;
    // ~1 MB request (17 frames) and a ~3 MB reply (49 frames).
    let text: String = (0..100_000).map(|i| format!("{:x}", i % 4096)).collect();
    let req = Echo {
        text: text.clone(),
        fail: false,
        repeat: 0,
    };
    let rep: Echo = a.request_json(&subject, &req, T).await.unwrap();
    assert_eq!(rep.text, text);
    let req = Echo {
        text: "abc".repeat(1000),
        fail: false,
        repeat: 1000,
    };
    let rep: Echo = a.request_json(&subject, &req, T).await.unwrap();
    assert_eq!(rep.text.len(), 3_000_000);
    // With the default budget: a 3 MB body each way.
    let (a, b) = (env.bus().await, env.bus().await);
    let subject2 = format!("{}.echo", prefix());
    let server2 = echo_server(&b, &subject2).await;
    let req = Echo {
        text: "x".repeat(3 << 20),
        fail: false,
        repeat: 0,
    };
    let rep: Echo = a.request_json(&subject2, &req, T).await.unwrap();
    assert_eq!(rep.text, req.text);
    server.drain().await;
    server2.drain().await;
}

async fn transfer_limit_is_a_typed_error(env: Env) {
    let budget = SizeBudget {
        max_transfer: 256 * 1024,
        ..SizeBudget::default()
    };
    let a = env.bus().await.with_budget(budget);
    let b = env.bus().await.with_budget(budget);
    let subject = format!("{}.echo", prefix());
    let server = echo_server(&b, &subject).await;
    let req = Echo {
        text: "y".repeat(300 * 1024),
        fail: false,
        repeat: 0,
    };
    let err = a
        .request_json::<_, Echo>(&subject, &req, T)
        .await
        .unwrap_err();
    match &err {
        CallError::Bus(BusError::PayloadTooLarge(p)) => {
            assert_eq!(p.limit, 256 * 1024);
            assert_eq!(p.subject, subject);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert!(err.is_payload_too_large());
    // A reply over the limit (and over one message) comes back as the service's typed error.
    let req = Echo {
        text: "z".repeat(1024),
        fail: false,
        repeat: 1100,
    };
    let result = a.request_json::<_, Echo>(&subject, &req, T).await;
    let kind = result
        .map(|_| ())
        .map_err(|e| e.service_error().map(|e| e.kind));
    assert_eq!(kind, Err(Some(ErrorKind::PayloadTooLarge)));
    server.drain().await;
}

async fn malformed_chunk_sequences_are_rejected(env: Env) {
    let (a, b) = (env.bus().await, env.bus().await);
    let subject = format!("{}.echo", prefix());
    let server = echo_server(&b, &subject).await;
    let frame = |i: u32| {
        Headers::new()
            .with(CHUNK_HEADER, format!("{i}/3"))
            .with(TRANSFER_HEADER, "t1")
    };
    let first = a
        .request(&subject, &frame(0), Bytes::from_static(b"{\"text\":"), T)
        .await
        .unwrap();
    let upload = first
        .headers
        .get(UPLOAD_HEADER)
        .expect("upload subject")
        .to_string();
    let ack = a
        .request(&upload, &frame(2), Bytes::from_static(b"}"), T)
        .await
        .unwrap();
    assert!(ack.headers.get(STATUS_HEADER).is_none());
    let dup = a
        .request(&upload, &frame(2), Bytes::from_static(b"}"), T)
        .await
        .unwrap();
    assert_eq!(dup.headers.get(STATUS_HEADER), Some("error"));
    let e: ServiceError = serde_json::from_slice(&dup.payload).unwrap();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(e.message.contains("twice"), "{e}");
    // A first frame that is not frame 0.
    let bad = a
        .request(&subject, &frame(1), Bytes::from_static(b"x"), T)
        .await
        .unwrap();
    assert_eq!(bad.headers.get(STATUS_HEADER), Some("error"));
    server.drain().await;
}

async fn drain_finishes_in_flight_requests(env: Env) {
    let (a, b) = (env.bus().await, env.bus().await);
    let subject = format!("{}.slow", prefix());
    let server = b
        .serve_json(&subject, Some("slow"), |ms: u64, _| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, ServiceError>(ms * 2)
        })
        .await
        .unwrap();
    let (a2, s2) = (a.clone(), subject.clone());
    let call = tokio::spawn(async move { a2.request_json::<_, u64>(&s2, &400u64, T).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    server.drain().await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "drain did not wait"
    );
    assert_eq!(call.await.unwrap().unwrap(), 800);
    let err = a
        .request_json::<_, u64>(&subject, &1u64, T)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Bus(BusError::NoResponders { .. })),
        "{err:?}"
    );
}

async fn namespaces_isolate(env: Env) {
    let ns1 = prefix();
    let ns2 = prefix();
    let a = env.bus().await.with_namespace(&ns1).unwrap();
    let b = env.bus().await.with_namespace(&ns1).unwrap();
    let other = env.bus().await.with_namespace(&ns2).unwrap();
    let plain = env.bus().await;
    let mut in_ns = b.subscribe("svc.>").await.unwrap();
    let mut in_other = other.subscribe("svc.>").await.unwrap();
    a.publish("svc.x", &Headers::new(), Bytes::from_static(b"1"))
        .await
        .unwrap();
    let m = next(&mut in_ns).await;
    assert_eq!(m.subject, "svc.x");
    nothing_more(&mut in_other).await;
    drop(in_other);
    other.flush().await.unwrap();
    // The namespace is a subject prefix: a plain handle can address it explicitly.
    plain
        .publish(&format!("{ns1}.svc.y"), &Headers::new(), Bytes::new())
        .await
        .unwrap();
    assert_eq!(next(&mut in_ns).await.subject, "svc.y");
    // Typed calls, chunked both ways, inside a namespace; another namespace has no responders.
    let budget = SizeBudget {
        max_payload: 64 * 1024,
        ..SizeBudget::default()
    };
    let server = echo_server(&b.clone().with_budget(budget), "svc.echo").await;
    let req = Echo {
        text: "n".repeat(300_000),
        fail: false,
        repeat: 0,
    };
    let rep: Echo = a
        .clone()
        .with_budget(budget)
        .request_json("svc.echo", &req, T)
        .await
        .unwrap();
    assert_eq!(rep.text.len(), 300_000);
    let err = other
        .request_json::<_, Echo>("svc.echo", &req, T)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Bus(BusError::NoResponders { .. })),
        "{err:?}"
    );
    server.drain().await;
    assert!(plain.clone().with_namespace("bad ns").is_err());
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::in_process()).await
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::nats()).await
                }
            )*
        }
    };
}

suite!(
    publish_subscribe_with_headers,
    wildcards,
    queue_groups_share_and_plain_subscribers_see_all,
    request_reply_and_typed_errors,
    payload_budget_is_enforced,
    invalid_subjects_and_headers,
    json_round_trip_and_service_errors,
    chunked_requests_and_replies,
    transfer_limit_is_a_typed_error,
    malformed_chunk_sequences_are_rejected,
    drain_finishes_in_flight_requests,
    namespaces_isolate,
);
