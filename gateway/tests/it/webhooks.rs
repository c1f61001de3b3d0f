//! Webhooks end to end: a receiver here checks every signature with the published Standard
//! Webhooks algorithm, sees each committed verdict exactly once per event after being down for
//! a while, nothing for a request without a verdict, the review's resolution, a redelivery;
//! a private target is refused; and a message survives `kill -9` of the instance that
//! committed it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use livegate::config::KeyHash;
use serde_json::{Value, json};

use crate::harness::{ACME_KEY, Backend, Harness, Kill, SimUrls, free_port, open_store};

const ADMIN_KEY: &str = "lg_admin_webhook_tests_0505";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    body: Value,
    accepted: bool,
}

#[derive(Clone, Default)]
struct Receiver {
    up: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<Received>>>,
}

/// The Standard Webhooks check, written from the specification: HMAC-SHA256 of
/// `id.timestamp.body` under the base64 key after `whsec_`, any of the space-separated
/// `v1,` signatures, and a timestamp within five minutes.
fn verify(headers: &axum::http::HeaderMap, body: &[u8]) -> Result<String, String> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(format!("no {n}"))
    };
    let (id, ts, sigs) = (
        h("webhook-id")?,
        h("webhook-timestamp")?,
        h("webhook-signature")?,
    );
    let t: i64 = ts.parse().map_err(|_| "bad timestamp".to_owned())?;
    if (chrono::Utc::now().timestamp() - t).abs() > 300 {
        return Err("stale timestamp".into());
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .map_err(|e| e.to_string())?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if sigs
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
    {
        Ok(id)
    } else {
        Err(format!("bad signature {sigs}"))
    }
}

async fn start_receiver(port: u16) -> Receiver {
    let r = Receiver::default();
    let state = r.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let id = match verify(&headers, &body) {
                        Ok(id) => id,
                        Err(e) => panic!("a webhook that does not verify: {e}"),
                    };
                    let accepted = state.up.load(Ordering::SeqCst);
                    let body: Value = serde_json::from_slice(&body).expect("json body");
                    state
                        .got
                        .lock()
                        .expect("got")
                        .push(Received { id, body, accepted });
                    if accepted {
                        axum::http::StatusCode::NO_CONTENT
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind receiver");
    tokio::spawn(async move { axum::serve(listener, app).await });
    r
}

impl Receiver {
    fn accepted(&self) -> Vec<Received> {
        let got = self.got.lock().expect("got");
        got.iter().filter(|r| r.accepted).cloned().collect()
    }

    async fn wait_for(&self, n: usize, what: &str) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{what}: only {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn yaml(port: u16) -> impl FnOnce(&SimUrls) -> String {
    move |u: &SimUrls| {
        format!(
            r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "${{TEST_DIDIT_KEY}}", timeout_ms: 1500 }}
admin:
  keys: ["{admin}"]
tenants:
  acme:
    keys: ["{acme}"]
    threshold: 0.8
    review_band: 0.2
    routing: {{ strategy: single, providers: [didit] }}
    webhooks:
      - {{ url: "http://127.0.0.1:{port}/hook", secret: "{SECRET}", allow_private_targets: true }}
"#,
            didit = u.didit,
            admin = KeyHash::of_key(ADMIN_KEY),
            acme = KeyHash::of_key(ACME_KEY),
        )
    }
}

/// The webhook sender on the harness's store and config, as `serve` starts it.
fn start_sender(h: &Harness, schedule: livegate::http::webhooks::Schedule) {
    livegate::http::webhooks::spawn(
        h.store.clone(),
        h.state.runtime.clone(),
        h.state.metrics.clone(),
        schedule,
    );
}

fn fast() -> livegate::http::webhooks::Schedule {
    livegate::http::webhooks::Schedule {
        first_retry: Duration::from_millis(100),
        cap: Duration::from_millis(400),
        poll: Duration::from_millis(50),
        circuit_after: 1000,
        ..Default::default()
    }
}

async fn every_verdict_arrives_once_signed_after_an_outage(backend: Backend) {
    let Some(store) = open_store(backend).await else {
        return;
    };
    let port = free_port();
    let receiver = start_receiver(port).await;
    let h = Harness::start_on(store, yaml(port), Default::default(), None).await;
    start_sender(&h, fast());

    // The receiver is down: three verdicts, and a request that reaches none.
    h.sim_rule(json!({"score": 0.97})).await;
    let mut ids = Vec::new();
    for seed in 0..3 {
        let r = h
            .liveness(ACME_KEY, "image", crate::harness::jpeg(seed), &[])
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.body["id"].as_str().expect("id").to_owned());
    }
    h.sim_rule(json!({"status": 500})).await;
    let failed = h
        .liveness(ACME_KEY, "image", crate::harness::jpeg(9), &[])
        .await;
    assert!(failed.status >= 500, "{}", failed.body);
    let (failed_row, _) = h.last_row("acme").await;
    assert!(failed_row.decision.is_none());
    // A while of refusals (each retried), then the receiver comes back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.got.lock().expect("got").len() < 6 {
        assert!(
            Instant::now() < deadline,
            "no retries while the receiver was down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.up.store(true, Ordering::SeqCst);
    let got = receiver.wait_for(3, "every verdict after the outage").await;
    // Give a duplicate the time to show up, were there one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = receiver.accepted();
    assert_eq!(
        got_after.len(),
        3,
        "delivered more than once: {got_after:?}"
    );
    let mut seen: Vec<String> = got
        .iter()
        .map(|r| r.body["data"]["id"].as_str().expect("data.id").to_owned())
        .collect();
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want, "each verdict exactly once");
    assert!(!seen.contains(&failed_row.id.to_string()));
    // Retries carry the same message id.
    let all = receiver.got.lock().expect("got").clone();
    for r in &got {
        assert!(
            all.iter().filter(|x| x.id == r.id).count() >= 2,
            "{r:?} was not retried"
        );
        assert_eq!(r.body["type"], "verification.completed");
        // The event carries the verification as a read shows it.
        let id = r.body["data"]["id"].as_str().expect("id");
        let read = h.get(ACME_KEY, &format!("/v1/verifications/{id}")).await;
        assert_eq!(r.body["data"], read.body);
    }

    // The delivery log.
    let admin = |path: String| {
        let c = h.client.clone();
        let url = h.url(&path);
        async move { Harness::call(c.get(url).bearer_auth(ADMIN_KEY)).await }
    };
    let log = admin("/admin/v1/webhooks/deliveries?state=delivered".into()).await;
    assert_eq!(
        log.body["data"].as_array().map(Vec::len),
        Some(3),
        "{}",
        log.body
    );
    let first = log.body["data"][0]["id"].as_str().expect("id").to_owned();
    let one = admin(format!("/admin/v1/webhooks/deliveries/{first}")).await;
    let attempts = one.body["log"].as_array().expect("log");
    assert!(attempts.len() >= 2, "{}", one.body);
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts.last().expect("last")["status"], 204);

    // A review: its verdict now, its resolution later.
    h.sim_rule(json!({"score": 0.7})).await;
    let r = h
        .liveness(ACME_KEY, "image", crate::harness::jpeg(4), &[])
        .await;
    assert_eq!(r.body["decision"], "review", "{}", r.body);
    let rid = r.body["id"].as_str().expect("id").to_owned();
    receiver.wait_for(4, "the review's verdict").await;
    let resolved = Harness::call(
        h.client
            .post(h.url(&format!("/admin/v1/reviews/{rid}")))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"decision": "approved", "reviewer": "ops"})),
    )
    .await;
    assert_eq!(resolved.status, 200, "{}", resolved.body);
    let got = receiver.wait_for(5, "the review's resolution").await;
    let event = got
        .iter()
        .find(|g| g.body["type"] == "review.resolved")
        .expect("review.resolved");
    assert_eq!(event.body["data"]["id"], rid.as_str());
    assert_eq!(event.body["data"]["final_decision"], "approved");

    // A manual redelivery sends the same message again.
    let r = Harness::call(
        h.client
            .post(h.url(&format!("/admin/v1/webhooks/deliveries/{first}/redeliver")))
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let got = receiver.wait_for(6, "the redelivery").await;
    assert_eq!(got.iter().filter(|g| g.id == first).count(), 2);
}

crate::backend_matrix!(
    backend;
    every_verdict_arrives_once_signed_after_an_outage,
);

/// A name that resolves to a private or loopback address here (not an IP literal, which the
/// config refuses already).
fn private_name() -> String {
    let mut names = vec!["vm".to_owned()];
    if let Ok(out) = std::process::Command::new("hostname").output() {
        names.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    for n in names {
        if let Ok(mut addrs) = std::net::ToSocketAddrs::to_socket_addrs(&(n.as_str(), 80))
            && addrs.any(|a: SocketAddr| livegate::config::webhooks::is_private(a.ip()))
        {
            return n;
        }
    }
    panic!("no host name here resolves to a private address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_target_is_refused_unless_allowed() {
    // Literals and localhost: refused by the config.
    for url in [
        "http://127.0.0.1:9/h",
        "http://localhost:9/h",
        "http://[::1]:9/h",
        "http://169.254.169.254/latest",
    ] {
        let text = format!(
            r#"
providers:
  didit: {{ kind: didit, base_url: "http://127.0.0.1:9", api_key: "k" }}
tenants:
  a:
    keys: ["sha256:0000000000000000000000000000000000000000000000000000000000000001"]
    routing: {{ strategy: single, providers: [didit] }}
    webhooks: [{{ url: "{url}", secret: "{SECRET}" }}]
"#
        );
        let e = livegate::config::Config::parse(&text, &|_| None).expect_err(url);
        assert!(
            e.to_string().contains("allow_private_targets"),
            "{url}: {e}"
        );
    }
    // A name that resolves to one: refused when sending.
    let Some(store) = open_store(Backend::Sqlite).await else {
        return;
    };
    let port = free_port();
    let receiver = start_receiver(port).await;
    receiver.up.store(true, Ordering::SeqCst);
    let name = private_name();
    let h = Harness::start_on(
        store,
        move |u: &SimUrls| {
            format!(
                r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "${{TEST_DIDIT_KEY}}", timeout_ms: 1500 }}
admin:
  keys: ["{admin}"]
tenants:
  acme:
    keys: ["{acme}"]
    routing: {{ strategy: single, providers: [didit] }}
    webhooks: [{{ url: "http://{name}:{port}/hook", secret: "{SECRET}" }}]
"#,
                didit = u.didit,
                admin = KeyHash::of_key(ADMIN_KEY),
                acme = KeyHash::of_key(ACME_KEY),
            )
        },
        Default::default(),
        None,
    )
    .await;
    start_sender(&h, fast());
    h.sim_rule(json!({"score": 0.97})).await;
    let r = h
        .liveness(ACME_KEY, "image", crate::harness::jpeg(1), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = Harness::call(
            h.client
                .get(h.url("/admin/v1/webhooks/deliveries"))
                .bearer_auth(ADMIN_KEY),
        )
        .await;
        let err = log.body["data"][0]["last_error"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if err.contains("private or loopback") {
            break;
        }
        assert!(Instant::now() < deadline, "never refused: {}", log.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        receiver.got.lock().expect("got").is_empty(),
        "a private target was reached"
    );
}

/// The instance that committed a verdict is killed before its webhook could be delivered;
/// another instance on the same database delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_survives_kill_9_of_its_instance() {
    let dir = std::env::temp_dir().join(format!("livegate-wh-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let didit = livegate_simulators::spawn(livegate_simulators::didit::router())
        .await
        .expect("sim");
    let hook_port = free_port();
    let config = dir.join("livegate.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
database_url: "sqlite:{db}"
providers:
  didit: {{ kind: didit, base_url: "http://{didit}", api_key: "k", timeout_ms: 1500 }}
admin:
  keys: ["{admin}"]
tenants:
  acme:
    keys: ["{acme}"]
    routing: {{ strategy: single, providers: [didit] }}
    webhooks: [{{ url: "http://127.0.0.1:{hook_port}/hook", secret: "{SECRET}", allow_private_targets: true }}]
"#,
            db = dir.join("wh.db").display(),
            admin = KeyHash::of_key(ADMIN_KEY),
            acme = KeyHash::of_key(ACME_KEY),
        ),
    )
    .expect("config");
    let client = reqwest::Client::new();
    let start = |n: usize| {
        let port = free_port();
        let log = std::fs::File::create(dir.join(format!("serve-{n}.log"))).expect("log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_livegate"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_remove("DATABASE_URL")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn");
        (format!("http://127.0.0.1:{port}"), Kill(child))
    };
    let ready = |base: String| {
        let client = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                assert!(Instant::now() < deadline, "{base} never ready");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let (base, mut first) = start(1);
    ready(base.clone()).await;
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(crate::harness::jpeg(1)).file_name("s.jpg"),
    );
    let r = client
        .post(format!("{base}/v1/liveness"))
        .bearer_auth(ACME_KEY)
        .multipart(form)
        .send()
        .await
        .expect("liveness");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    let id = v["id"].as_str().expect("id").to_owned();
    // Committed, and not delivered: nothing listens on the hook's port yet. The failed attempt
    // must be recorded (its error), not only claimed: a claim counts the attempt and locks the
    // message for three send timeouts, and a kill between the two would leave it locked past
    // this test's deadline (as it would in production, until the lock expires).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log: Value = client
            .get(format!("{base}/admin/v1/webhooks/deliveries"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("log")
            .json()
            .await
            .expect("json");
        if log["data"][0]["attempts"].as_i64().unwrap_or(0) >= 1
            && log["data"][0]["last_error"].is_string()
        {
            assert_eq!(log["data"][0]["state"], "pending", "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "never attempted: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-9", &first.0.id().to_string()])
        .status();
    let _ = first.0.wait();

    let receiver = start_receiver(hook_port).await;
    receiver.up.store(true, Ordering::SeqCst);
    let (base, _second) = start(2);
    ready(base).await;
    let got = receiver
        .wait_for(1, "the message of the killed instance")
        .await;
    assert_eq!(got[0].body["data"]["id"], id.as_str());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.accepted().len(), 1);
}

/// The database is away when a verdict is committed: the client gets 503 and no webhook is
/// ever sent for it (its message would have been in the failed commit); the next verdict is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_for_a_verdict_whose_commit_failed() {
    let Some((cut, store)) = crate::faults::proxied_store().await else {
        return;
    };
    let port = free_port();
    let receiver = start_receiver(port).await;
    receiver.up.store(true, Ordering::SeqCst);
    let h = Harness::start_on(
        store,
        move |u: &SimUrls| format!("limits: {{ commit_grace_ms: 300 }}\n{}", yaml(port)(u)),
        Default::default(),
        None,
    )
    .await;
    start_sender(&h, fast());
    h.sim_rule(json!({"score": 0.97})).await;
    cut.cut();
    let lost = h
        .liveness(ACME_KEY, "image", crate::harness::jpeg(1), &[])
        .await;
    assert_eq!(lost.status, 503, "{}", lost.body);
    assert_eq!(lost.body["code"], "store_unavailable", "{}", lost.body);
    cut.restore();
    let kept = h
        .liveness(ACME_KEY, "image", crate::harness::jpeg(2), &[])
        .await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    let got = receiver.wait_for(1, "the committed verdict").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got_after = receiver.accepted();
    assert_eq!(got_after.len(), 1, "{got_after:?}");
    assert_eq!(got[0].body["data"]["id"], kept.body["id"]);
}

/// An endpoint that keeps failing has its circuit opened: attempts stop reaching it (logged as
/// such) until the circuit closes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_has_its_circuit_opened() {
    let Some(store) = open_store(Backend::Sqlite).await else {
        return;
    };
    let port = free_port();
    let receiver = start_receiver(port).await;
    let h = Harness::start_on(store, yaml(port), Default::default(), None).await;
    start_sender(
        &h,
        livegate::http::webhooks::Schedule {
            circuit_after: 2,
            circuit_open: Duration::from_secs(60),
            ..fast()
        },
    );
    h.sim_rule(json!({"score": 0.97})).await;
    let r = h
        .liveness(ACME_KEY, "image", crate::harness::jpeg(3), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let log = Harness::call(
            h.client
                .get(h.url("/admin/v1/webhooks/deliveries"))
                .bearer_auth(ADMIN_KEY),
        )
        .await;
        let m = &log.body["data"][0];
        if m["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("circuit"))
            && m["attempts"].as_i64().unwrap_or(0) >= 4
        {
            break m["id"].as_str().expect("id").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the circuit never opened: {}",
            log.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Two attempts reached the receiver; every later one was held back.
    assert_eq!(receiver.got.lock().expect("got").len(), 2);
    let one = Harness::call(
        h.client
            .get(h.url(&format!("/admin/v1/webhooks/deliveries/{id}")))
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    let log = one.body["log"].as_array().expect("log");
    assert_eq!(log[0]["status"], 503);
    assert_eq!(log[1]["status"], 503);
    assert!(
        log[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("circuit")),
        "{}",
        one.body
    );
}
