//! Hostile and broken clients and vendors, through real sockets: slow headers, trickled
//! bodies, idle sockets by the thousand, decompression bombs, truncated images, a vendor that
//! redirects, floods of unauthenticated scrapes, hidden characters, and more work than the
//! instance takes. Every limit is set low in the config so each case runs in seconds.

use std::time::{Duration, Instant};

use livegate::config::KeyHash;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Backend, Harness, SimUrls, jpeg, selfie_request, spawn_sim};

const KEY: &str = "lg_test_hostile_key_5050";
const OTHER_KEY: &str = "lg_test_hostile_other_5051";
const THIRD_KEY: &str = "lg_test_hostile_third_5052";

/// Three tenants on the Didit simulator, with `extra` top-level YAML (`server:`, `limits:`).
fn config(didit: &str, extra: &str) -> String {
    format!(
        r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "${{TEST_DIDIT_KEY}}", timeout_ms: 5000 }}
{extra}
tenants:
  first:
    keys: ["{key}"]
    routing: {{ strategy: single, providers: [didit] }}
    credits: {{ initial: 1000, cost: {{ didit: 1 }} }}
  second:
    keys: ["{other}"]
    routing: {{ strategy: single, providers: [didit] }}
  third:
    keys: ["{third}"]
    routing: {{ strategy: single, providers: [didit] }}
"#,
        key = KeyHash::of_key(KEY),
        other = KeyHash::of_key(OTHER_KEY),
        third = KeyHash::of_key(THIRD_KEY),
    )
}

async fn start(extra: &'static str) -> Harness {
    Harness::start_with(Backend::Sqlite, move |u: &SimUrls| config(u.didit, extra))
        .await
        .expect("sqlite harness")
}

fn addr(h: &Harness) -> String {
    h.base.trim_start_matches("http://").to_owned()
}

/// Waits until the server closes `conn` (EOF or reset); how long that took.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            conn.read(&mut buf),
        )
        .await
        {
            Err(_) => panic!("the connection is still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads the whole answer on `conn` until the server closes it or `limit` passes.
async fn answer_within(conn: &mut TcpStream, limit: Duration) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_and_silent_sockets_are_closed() {
    let h = start("server: { header_timeout_ms: 800, keep_alive_timeout_ms: 30000 }").await;
    let mut half = TcpStream::connect(addr(&h)).await.expect("connect");
    half.write_all(b"POST /v1/liveness HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        .await
        .expect("write");
    let mut silent = TcpStream::connect(addr(&h)).await.expect("connect");
    let took = closed_within(&mut half, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(500),
        "closed after {took:?}: too soon"
    );
    closed_within(&mut silent, Duration::from_secs(2)).await;

    // A kept-alive connection whose next request starts but never finishes its headers.
    let mut kept = TcpStream::connect(addr(&h)).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.expect("answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    closed_within(&mut kept, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed() {
    let h = start("server: { header_timeout_ms: 20000, keep_alive_timeout_ms: 600 }").await;
    let mut conn = TcpStream::connect(addr(&h)).await.expect("connect");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf).await.expect("answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let took = closed_within(&mut conn, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(400), "closed after {took:?}");
}

/// The head of a multipart liveness request announcing `len` body bytes, and the body's start.
fn slow_upload(len: usize) -> (String, &'static str) {
    let head = format!(
        "POST /v1/liveness HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OTHER_KEY}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {len}\r\n\r\n"
    );
    let start = "--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"s.jpg\"\r\n\
                 Content-Type: image/jpeg\r\n\r\n";
    (head, start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_and_a_row() {
    let h = start("server: { request_timeout_ms: 1500, body_idle_timeout_ms: 5000 }").await;
    let mut conn = TcpStream::connect(addr(&h)).await.expect("connect");
    let (head, start) = slow_upload(100_000);
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(start.as_bytes()).await.expect("start");
    let (mut reader, mut writer) = conn.into_split();
    let trickle = tokio::spawn(async move {
        // One byte every 100 ms: never idle long, never done.
        for _ in 0..100 {
            if writer.write_all(&[0xFF]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains("request_timeout") {
        assert!(started.elapsed() < Duration::from_secs(5), "no 408 in 5 s");
        match tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    trickle.abort();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(4));
    let (row, _) = h.last_row("second").await;
    assert_eq!(row.error_code.as_deref(), Some("request_timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408() {
    let h = start("server: { request_timeout_ms: 20000, body_idle_timeout_ms: 500 }").await;
    let mut conn = TcpStream::connect(addr(&h)).await.expect("connect");
    let (head, start) = slow_upload(100_000);
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(start.as_bytes()).await.expect("start");
    let started = Instant::now();
    let text = answer_within(&mut conn, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_sockets_do_not_slow_a_real_check() {
    let h = start("server: { header_timeout_ms: 3000 }").await;
    let before = Instant::now();
    let r = h.liveness(OTHER_KEY, "image", jpeg(1), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let baseline = before.elapsed();

    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(addr(&h)).await.expect("connect"));
    }
    let during = Instant::now();
    let r = h.liveness(OTHER_KEY, "image", jpeg(2), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let took = during.elapsed();
    assert!(
        took < baseline * 5 + Duration::from_millis(500),
        "{took:?} with 2000 idle sockets, {baseline:?} without"
    );
    // And the server lets go of all of them by itself.
    for conn in &mut idle {
        closed_within(conn, Duration::from_secs(8)).await;
    }
}

/// A PNG whose header promises 5000x5000 RGBA16: 200 MB decoded, from ~200 KB on the wire.
fn rgba16_bomb() -> Vec<u8> {
    use image::ImageEncoder;
    let (w, h) = (5000u32, 5000u32);
    let zeros = vec![0u8; (w * h * 8) as usize];
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::NoFilter,
    )
    .write_image(&zeros, w, h, image::ExtendedColorType::Rgba16)
    .expect("encode");
    out
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Eight decompression bombs at once: each refused from its header, and the server's peak
/// memory stays under 1 GiB (decoded, they would take 1.6 GB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_before_decoding() {
    let didit = spawn_sim(livegate_simulators::didit::router()).await;
    let served =
        crate::served::Served::start(&config(&didit, "").replace("${TEST_DIDIT_KEY}", "k"), &[])
            .await;
    let bomb = rgba16_bomb();
    assert!(bomb.len() < 1_000_000, "{} bytes", bomb.len());
    let client = reqwest::Client::new();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let call = selfie_request(&client, &served.base, OTHER_KEY, bomb.clone(), "bomb.png");
            tokio::spawn(Harness::call(call))
        })
        .collect();
    for c in calls {
        let r = c.await.expect("join");
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.body["code"], "image_too_large_decoded", "{}", r.body);
    }
    let peak = peak_rss_kib(served.pid());
    assert!(peak < 1024 * 1024, "server peak RSS {peak} KiB");
    served.stop().await;
}

/// `livegate_runtime_workers` as scraped.
async fn runtime_workers(base: &str) -> String {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("livegate_runtime_workers "))
        .unwrap_or_else(|| panic!("no livegate_runtime_workers in:\n{text}"))
        .trim()
        .to_owned()
}

/// One async worker thread by default: forty verifications at once are all answered by it
/// (the decoding pool and the vendor's latency are not its work); `LIVEGATE_WORKER_THREADS`
/// (`--worker-threads`) raises it, and 0 is refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_by_default_and_more_on_request() {
    let didit = spawn_sim(livegate_simulators::didit::router()).await;
    let yaml = config(&didit, "").replace("${TEST_DIDIT_KEY}", "k");
    let served = crate::served::Served::start(&yaml, &[]).await;
    assert_eq!(runtime_workers(&served.base).await, "1");
    let client = reqwest::Client::new();
    let calls: Vec<_> = (0..40u8)
        .map(|i| {
            let call = selfie_request(&client, &served.base, OTHER_KEY, jpeg(i), "s.jpg");
            tokio::spawn(Harness::call(call))
        })
        .collect();
    for c in calls {
        let r = tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .expect("answered in time")
            .expect("join");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    served.stop().await;

    let more = crate::served::Served::start(&yaml, &[("LIVEGATE_WORKER_THREADS", "3")]).await;
    assert_eq!(runtime_workers(&more.base).await, "3");
    more.stop().await;

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args(["serve", "--worker-threads", "0"])
        .env_remove("LIVEGATE_WORKER_THREADS")
        .output()
        .expect("run livegate");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--worker-threads"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_redirect_carries_no_credential() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let thief = spawn_sim(
        axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let log = log.clone();
            async move {
                log.lock().expect("lock").push(format!("{headers:?}"));
                "{}"
            }
        }),
    )
    .await;
    let h = start("").await;
    h.sim_rule(json!({"status": 302, "headers": {"location": format!("{thief}/steal")}}))
        .await;
    let r = h.liveness(OTHER_KEY, "image", jpeg(3), &[]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body["code"], "provider_bad_response", "{}", r.body);
    assert!(
        seen.lock().expect("lock").is_empty(),
        "the redirect was followed: {:?}",
        seen.lock().expect("lock")
    );
}

/// Every prefix of a real JPEG, from 1 KB in steps, is refused (400) and never reaches the
/// vendor; the whole image is scored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_jpeg_is_refused_never_scored() {
    let h = start("").await;
    let whole = jpeg(4);
    let mut cuts: Vec<usize> = (1024..whole.len()).step_by(997).collect();
    cuts.extend([whole.len() - 2, whole.len() - 1]);
    for cut in cuts {
        let r = h
            .liveness(OTHER_KEY, "image", whole[..cut].to_vec(), &[])
            .await;
        assert_eq!(r.status, 400, "cut at {cut} of {}: {}", whole.len(), r.body);
        let code = r.body["code"].as_str().unwrap_or_default();
        assert!(
            code == "image_truncated" || code == "image_undecodable",
            "cut at {cut}: {}",
            r.body
        );
    }
    assert!(
        h.sim_requests().await.is_empty(),
        "a cut image reached the vendor"
    );
    let r = h.liveness(OTHER_KEY, "image", whole, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_characters_in_ids_and_metadata_keys_are_refused() {
    let h = start("").await;
    for id in ["abc\u{202E}cba", "user\u{200B}1", "\u{FEFF}x", "a\u{2066}b"] {
        let r = h
            .liveness(OTHER_KEY, "image", jpeg(5), &[("external_id", id)])
            .await;
        assert_eq!(r.status, 400, "{id:?}: {}", r.body);
        assert_eq!(r.body["code"], "invalid_external_id");
    }
    let r = h
        .liveness(
            OTHER_KEY,
            "image",
            jpeg(5),
            &[("metadata", r#"{"plan": {"ti\u200Ber": "gold"}}"#)],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["code"], "invalid_metadata");
    let r = h
        .liveness(
            OTHER_KEY,
            "image",
            jpeg(5),
            &[
                ("external_id", "Zoë-日本-42"),
                ("metadata", r#"{"name": "Zoë"}"#),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// More work than the instance takes: a tenant past its share and the instance past its cap
/// are refused at once with 503 `overloaded` and `Retry-After`, while the work already admitted
/// finishes; both refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_caps_work_is_shed_at_once() {
    let h = start("limits: { max_in_flight: 3, max_in_flight_per_tenant: 2 }").await;
    h.sim_rule(json!({"delay_ms": 1500, "score": 0.95})).await;
    let send = |key: &'static str, seed: u8| {
        let call = selfie_request(&h.client, &h.base, key, jpeg(seed), "s.jpg");
        tokio::spawn(Harness::call(call))
    };
    let admitted = vec![send(KEY, 10), send(KEY, 11)];
    h.sim_received(2).await;
    let started = Instant::now();
    let r = send(KEY, 12).await.expect("join");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["code"], "overloaded", "{}", r.body);
    assert_eq!(r.headers["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "not at once"
    );
    // Another tenant still gets the instance's last slot.
    let other = send(OTHER_KEY, 13);
    h.sim_received(3).await;
    let r = send(THIRD_KEY, 14).await.expect("join");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["code"], "overloaded", "{}", r.body);
    for c in admitted.into_iter().chain([other]) {
        let r = c.await.expect("join");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let text = crate::harness::get_text(&h.client, &h.url("/metrics")).await;
    assert!(
        text.contains(r#"livegate_shed_total{scope="tenant",tenant="first"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"livegate_shed_total{scope="process",tenant="third"} 1"#),
        "{text}"
    );
    // Nothing is held once the work is done.
    let r = h.liveness(THIRD_KEY, "image", jpeg(15), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `/metrics` and `/readyz` at 200 requests a second send nothing to the database beyond the
/// background checks (bytes through a proxy in front of Postgres are counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_endpoints_cost_no_query() {
    let Some((cut, store)) = crate::faults::proxied_store().await else {
        return;
    };
    let h = Harness::start_on(
        store,
        |u: &SimUrls| config(u.didit, ""),
        Default::default(),
        None,
    )
    .await;
    // The first background round (ping and balances) is done.
    let until = Instant::now() + Duration::from_secs(5);
    while Harness::call(h.client.get(h.url("/readyz"))).await.status != 200 {
        assert!(Instant::now() < until, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = cut.sent();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    for i in 0..400 {
        ticker.tick().await;
        let path = if i % 2 == 0 { "/metrics" } else { "/readyz" };
        let r = Harness::call(h.client.get(h.url(path))).await;
        assert_eq!(r.status, 200);
    }
    let took = started.elapsed();
    let sent = cut.sent() - before;
    // About one ping a second, and a balance read every few: a few hundred bytes.
    assert!(sent < 4096, "{sent} bytes sent to the database in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let h = start("server: { max_header_bytes: 8192 }").await;
    let r = Harness::call(
        h.client
            .get(h.url("/healthz"))
            .header("x-filler", "a".repeat(20_000)),
    )
    .await;
    assert_eq!(r.status, 431, "{}", r.body);
    let r = Harness::call(
        h.client
            .get(h.url("/healthz"))
            .header("x-filler", "a".repeat(2000)),
    )
    .await;
    assert_eq!(r.status, 200);
}

/// At `max_connections` the listener takes no more until one closes; the one waiting is then
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_the_next_waits_for_a_free_slot() {
    let h = start("server: { max_connections: 3, header_timeout_ms: 20000 }").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr(&h)).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut waiting = TcpStream::connect(addr(&h))
        .await
        .expect("the kernel's backlog takes it");
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    assert!(
        tokio::time::timeout(Duration::from_millis(700), waiting.read(&mut buf))
            .await
            .is_err(),
        "served past the cap"
    );
    drop(held.pop());
    let text = answer_within(&mut waiting, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose structure and header are fine but whose pixel data is not zlib: it passes every
/// check short of a decode.
fn png_with_broken_pixels() -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&u32::try_from(data.len()).expect("small").to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&640u32.to_be_bytes());
    ihdr.extend_from_slice(&480u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x13; 64]);
    chunk(b"IEND", &[]);
    out
}

/// An image only forwarded is not decoded: one whose pixels are broken reaches the vendor (who
/// judges it), while a tenant with `intake.decode: always` refuses it here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_image_is_decoded_only_when_the_tenant_asks() {
    let h = Harness::start_with(Backend::Sqlite, |u: &SimUrls| {
        config(u.didit, "").replace("  third:\n", "  third:\n    intake: { decode: always }\n")
    })
    .await
    .expect("harness");
    let broken = png_with_broken_pixels();
    let r = h.liveness(THIRD_KEY, "image", broken.clone(), &[]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["code"], "image_undecodable", "{}", r.body);
    assert!(h.sim_requests().await.is_empty());

    let r = h.liveness(OTHER_KEY, "image", broken, &[]).await;
    assert_ne!(
        r.body["code"], "image_undecodable",
        "decoded anyway: {}",
        r.body
    );
    assert_eq!(h.sim_requests().await.len(), 1, "{}", r.body);
    let (row, attempts) = h.last_row("second").await;
    assert_eq!((row.image_width, row.image_height), (Some(640), Some(480)));
    assert_eq!(attempts.len(), 1);
}

/// `jpeg` with an EXIF APP1 segment saying "rotate 90°" (orientation 6) right after SOI.
fn with_exif_rotation(jpeg: &[u8]) -> Vec<u8> {
    let mut tiff = b"II*\0\x08\0\0\0".to_vec(); // little-endian, IFD at 8
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&[6, 0, 0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let len = u16::try_from(app1.len() + 2).expect("small");
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The dimensions stored for a forwarded image are those its EXIF orientation gives, as for a
/// decoded one: a 640x480 JPEG turned a quarter is 480x640, on either path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turned_image_keeps_its_turned_size_undecoded() {
    let h = Harness::start_with(Backend::Sqlite, |u: &SimUrls| {
        config(u.didit, "").replace("  third:\n", "  third:\n    intake: { decode: always }\n")
    })
    .await
    .expect("harness");
    let turned = with_exif_rotation(&jpeg(30));
    for (key, tenant) in [(OTHER_KEY, "second"), (THIRD_KEY, "third")] {
        let r = h.liveness(key, "image", turned.clone(), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (row, _) = h.last_row(tenant).await;
        assert_eq!(
            (row.image_width, row.image_height),
            (Some(480), Some(640)),
            "{tenant}"
        );
    }
}
