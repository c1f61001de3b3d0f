//! Hot reload of the real binary: `livegate serve --config FILE` in front of in-process
//! simulators, the file rewritten under load, an invalid file refused, SIGHUP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use livegate::config::KeyHash;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::encode;

const TENANT_KEY: &str = "lg_test_reload_tenant_key_01";
const ADMIN_KEY: &str = "lg_test_reload_admin_key_02";
/// Requests kept in flight while the file changes.
const IN_FLIGHT: usize = 200;

/// The gateway process; killed (and reaped) when dropped, whatever the test's outcome.
struct Gateway {
    child: Child,
    base: String,
    /// stderr (JSON log lines), as read so far.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(config: &std::path::Path, dir: &std::path::Path) -> Gateway {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_livegate"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env(
                "DATABASE_URL",
                format!("sqlite:{}", dir.join("livegate.db").display()),
            )
            .env("LIVEGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("LIVEGATE_LOG", "info")
            .env_remove("LIVEGATE_LOG_FORMAT")
            .env_remove("LIVEGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start livegate");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("logs").push(line);
            }
        });
        Gateway {
            child,
            base: format!("http://127.0.0.1:{port}"),
            logs,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Parsed JSON log lines with this `message`.
    fn log_events(&self, message: &str) -> Vec<Value> {
        self.logs
            .lock()
            .expect("logs")
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    fn all_logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// Wait (at most 60 s) until `/healthz` answers.
    async fn wait_up(&self, client: &reqwest::Client) {
        let up_until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < up_until,
                "livegate did not start:\n{}",
                self.all_logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn config_yaml(a: &str, b: &str, route_to: &str, note: &str) -> String {
    format!(
        r#"# {note}
providers:
  sim_a: {{ kind: didit, base_url: "{a}", api_key: "key-a", timeout_ms: 10000 }}
  sim_b: {{ kind: didit, base_url: "{b}", api_key: "key-b", timeout_ms: 10000 }}
admin:
  keys: ["{admin}"]
tenants:
  t:
    keys: ["{tenant}"]
    threshold: 0.5
    routing: {{ strategy: single, providers: [{route_to}] }}
"#,
        admin = KeyHash::of_key(ADMIN_KEY),
        tenant = KeyHash::of_key(TENANT_KEY),
    )
}

fn hash_of(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// Replace the file in one step (write aside, rename), as editors and deploy tools do.
fn write_config(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

async fn admin_config(client: &reqwest::Client, base: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = client.get(format!("{base}/admin/v1/config"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("admin config");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Poll `GET /admin/v1/config` until it shows `hash` (at most 10 s); its `loaded_at`.
async fn wait_for_hash(client: &reqwest::Client, gw: &Gateway, hash: &str) -> DateTime<Utc> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = admin_config(client, &gw.base, Some(ADMIN_KEY)).await;
        assert_eq!(status, 200, "{body}");
        if body["hash"] == hash {
            return loaded_at(&body);
        }
        assert!(
            Instant::now() < until,
            "config {hash} never went live; last: {body}\nlogs:\n{}",
            gw.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn loaded_at(body: &Value) -> DateTime<Utc> {
    body["loaded_at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("no loaded_at in {body}"))
}

struct Done {
    started: Instant,
    ended: Instant,
    status: u16,
    provider: Option<String>,
    id: Option<String>,
    body: Value,
}

async fn verify(client: &reqwest::Client, base: &str, image: Vec<u8>) -> Done {
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(image).file_name("selfie.jpg"),
    );
    let started = Instant::now();
    let resp = client
        .post(format!("{base}/v1/liveness"))
        .bearer_auth(TENANT_KEY)
        .multipart(form)
        .send()
        .await;
    let (status, body) = match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({"transport error": e.to_string()})),
    };
    Done {
        started,
        ended: Instant::now(),
        status,
        provider: body["provider"].as_str().map(str::to_owned),
        id: body["id"].as_str().map(str::to_owned),
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_refuses_invalid_files_and_follows_sighup() {
    use livegate_simulators as sims;
    let url = |a: std::net::SocketAddr| format!("http://{a}");
    let a = url(sims::spawn(sims::didit::router()).await.expect("sim a"));
    let b = url(sims::spawn(sims::didit::router()).await.expect("sim b"));
    let client = reqwest::Client::new();
    // Slow answers keep requests in flight while the config changes under them.
    for sim in [&a, &b] {
        let resp = client
            .post(format!("{sim}/_sim/rules"))
            .json(&json!({"respond": {"score": 0.9, "delay_ms": 300}}))
            .send()
            .await
            .expect("rule");
        assert_eq!(resp.status().as_u16(), 201);
    }

    let dir = std::env::temp_dir().join(format!("lg-reload-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("livegate.yaml");
    let v1 = config_yaml(&a, &b, "sim_a", "v1");
    std::fs::write(&path, &v1).expect("write");
    let gw = Gateway::start(&path, &dir);

    // Up, with v1 live.
    gw.wait_up(&client).await;
    let (status, body) = admin_config(&client, &gw.base, Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hash"], hash_of(&v1));
    assert_eq!(body["tenants"], json!(["t"]));
    let loaded_v1 = loaded_at(&body);

    // The admin endpoint wants an admin key.
    let (status, body) = admin_config(&client, &gw.base, Some(TENANT_KEY)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
    let (status, body) = admin_config(&client, &gw.base, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = admin_config(&client, &gw.base, Some("not-a-key")).await;
    assert_eq!(status, 401);

    // ---- the file changes under 200 requests in flight --------------------------------
    let stop = Arc::new(AtomicBool::new(false));
    let image = encode(64, 64, 1, image::ImageFormat::Jpeg);
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, base, stop, image) =
                (client.clone(), gw.base.clone(), stop.clone(), image.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    done.push(verify(&client, &base, image.clone()).await);
                }
                done
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let v2 = config_yaml(&a, &b, "sim_b", "v2");
    let written = Instant::now();
    write_config(&path, &v2);
    let loaded_v2 = wait_for_hash(&client, &gw, &hash_of(&v2)).await;
    let seen = Instant::now();
    assert!(loaded_v2 > loaded_v1, "{loaded_v2} vs {loaded_v1}");
    // Let a few more rounds run under v2.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut done = Vec::new();
    for w in workers {
        done.extend(w.await.expect("worker"));
    }

    let failed: Vec<_> = done.iter().filter(|d| d.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {} {}",
        failed.len(),
        done.len(),
        failed[0].status,
        failed[0].body
    );
    let before: Vec<_> = done.iter().filter(|d| d.ended < written).collect();
    let after: Vec<_> = done.iter().filter(|d| d.started > seen).collect();
    // All workers had a request out when the file changed (give or take the instant
    // between one request and the next).
    let in_flight = done
        .iter()
        .filter(|d| d.started <= written && d.ended >= written)
        .count();
    assert!(
        in_flight >= IN_FLIGHT - 10,
        "only {in_flight} requests in flight at the change"
    );
    assert!(
        !before.is_empty() && !after.is_empty(),
        "{} before, {} after",
        before.len(),
        after.len()
    );
    assert!(
        before
            .iter()
            .all(|d| d.provider.as_deref() == Some("sim_a")),
        "a request finished before the change went elsewhere"
    );
    assert!(
        after.iter().all(|d| d.provider.as_deref() == Some("sim_b")),
        "a request started after the reload still followed the old routing"
    );
    // Requests in flight during the swap finished under the config they started with.
    let straddled = done
        .iter()
        .filter(|d| d.started < written && d.ended > seen)
        .count();
    assert!(straddled > 0, "no request was in flight during the reload");

    // Every stored verification carries the hash of the config that decided it: v1 with
    // sim_a, v2 with sim_b, in-flight requests included.
    let store = livegate::store::connect(&format!("sqlite:{}", dir.join("livegate.db").display()))
        .await
        .expect("open the gateway's database");
    let (h1, h2) = (hash_of(&v1), hash_of(&v2));
    for d in &done {
        let id = uuid::Uuid::parse_str(d.id.as_deref().expect("id")).expect("uuid");
        let row = store.get_verification("t", id).await.expect("row");
        let expected = match d.provider.as_deref() {
            Some("sim_a") => &h1,
            Some("sim_b") => &h2,
            other => panic!("provider {other:?}"),
        };
        assert_eq!(row.config_hash.as_deref(), Some(expected.as_str()));
    }

    // ---- an invalid file is refused; v2 keeps serving -------------------------------
    let invalid = config_yaml(&a, &b, "sim_c", "invalid: unknown provider");
    write_config(&path, &invalid);
    let until = Instant::now() + Duration::from_secs(10);
    while gw
        .log_events("invalid config rejected; the previous config keeps serving")
        .is_empty()
    {
        assert!(
            Instant::now() < until,
            "the invalid file was not looked at:\n{}",
            gw.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gw.log_events("config rejected")
            .iter()
            .any(|e| e["problem"].as_str().is_some_and(|p| p.contains("sim_c"))),
        "the problem is logged:\n{}",
        gw.all_logs()
    );
    let (status, body) = admin_config(&client, &gw.base, Some(ADMIN_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(body["hash"], h2, "the invalid file replaced the config");
    assert_eq!(loaded_at(&body), loaded_v2);
    let d = verify(&client, &gw.base, image.clone()).await;
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(d.provider.as_deref(), Some("sim_b"));

    // ---- SIGHUP reloads -------------------------------------------------------------
    // The file poller (1 s) could see the new file between the write and the signal; if it
    // wins the race, try again with another file.
    let mut by_signal = None;
    for attempt in 0..3 {
        let v3 = config_yaml(&a, &b, "sim_a", &format!("v3, try {attempt}"));
        let h3 = hash_of(&v3);
        write_config(&path, &v3);
        let kill = Command::new("kill")
            .arg("-HUP")
            .arg(gw.pid().to_string())
            .status()
            .expect("kill -HUP");
        assert!(kill.success());
        let loaded_v3 = wait_for_hash(&client, &gw, &h3).await;
        assert!(loaded_v3 > loaded_v2);
        // The new config is served a moment before its log line is written.
        let seen = Instant::now();
        let first_reload = loop {
            let line = gw
                .log_events("config reloaded")
                .into_iter()
                .find(|e| e["hash"] == h3.as_str());
            match line {
                Some(l) => break l,
                None if seen.elapsed() < Duration::from_secs(5) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => panic!("no reload log line for {h3}"),
            }
        };
        if first_reload["trigger"] == "SIGHUP" {
            by_signal = Some(h3);
            break;
        }
    }
    let h3 = by_signal.expect("SIGHUP never triggered the reload");
    let d = verify(&client, &gw.base, image).await;
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(d.provider.as_deref(), Some("sim_a"));
    let row = store
        .get_verification(
            "t",
            uuid::Uuid::parse_str(d.id.as_deref().expect("id")).expect("uuid"),
        )
        .await
        .expect("row");
    assert_eq!(row.config_hash.as_deref(), Some(h3.as_str()));
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What kubelet does to a mounted ConfigMap: each version is a new timestamped directory,
/// `..data` a symlink to the current one and `livegate.yaml` a symlink through `..data`; an
/// update points a fresh `..data_tmp` at the new directory, renames it over `..data` and
/// removes the old directory. No file livegate was given is ever written.
struct ConfigMapDir {
    dir: std::path::PathBuf,
    version: u32,
}

impl ConfigMapDir {
    fn new(dir: &std::path::Path, text: &str) -> ConfigMapDir {
        let mut cm = ConfigMapDir {
            dir: dir.join("configmap"),
            version: 0,
        };
        std::fs::create_dir_all(&cm.dir).expect("configmap dir");
        cm.publish(text);
        std::os::unix::fs::symlink("..data/livegate.yaml", cm.dir.join("livegate.yaml"))
            .expect("file symlink");
        cm
    }

    fn file(&self) -> std::path::PathBuf {
        self.dir.join("livegate.yaml")
    }

    fn publish(&mut self, text: &str) {
        let old = format!(
            "..2026_12_02_00_00_0{}.{}",
            self.version,
            100 + self.version
        );
        self.version += 1;
        let new = format!(
            "..2026_12_02_00_00_0{}.{}",
            self.version,
            100 + self.version
        );
        std::fs::create_dir(self.dir.join(&new)).expect("version dir");
        std::fs::write(self.dir.join(&new).join("livegate.yaml"), text).expect("write version");
        std::os::unix::fs::symlink(&new, self.dir.join("..data_tmp")).expect("..data_tmp");
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).expect("swap ..data");
        if self.version > 1 {
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove old version");
        }
    }
}

#[tokio::test]
async fn a_configmap_update_by_symlink_swap_is_reloaded() {
    let dir = std::env::temp_dir().join(format!("lg-cm-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let first = config_yaml("http://127.0.0.1:9", "http://127.0.0.1:9", "sim_a", "v1");
    let mut cm = ConfigMapDir::new(&dir, &first);
    let gw = Gateway::start(&cm.file(), &dir);
    let client = reqwest::Client::new();
    gw.wait_up(&client).await;
    wait_for_hash(&client, &gw, &hash_of(&first)).await;

    let second = config_yaml("http://127.0.0.1:9", "http://127.0.0.1:9", "sim_b", "v2");
    cm.publish(&second);
    wait_for_hash(&client, &gw, &hash_of(&second)).await;
    assert!(
        gw.log_events("config reloaded")
            .iter()
            .any(|e| e["trigger"] == "file change"),
        "no reload logged:\n{}",
        gw.all_logs()
    );

    // And again: the directory livegate first read through is gone by now.
    let third = config_yaml("http://127.0.0.1:9", "http://127.0.0.1:9", "sim_a", "v3");
    cm.publish(&third);
    wait_for_hash(&client, &gw, &hash_of(&third)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
