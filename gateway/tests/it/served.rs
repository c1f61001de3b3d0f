//! `livegate serve` as a child process, for what only the binary does: reading the OTEL_*
//! environment, installing the log subscriber, exporting traces.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Kill, free_port};

pub struct Served {
    pub base: String,
    pub dir: PathBuf,
    pub database_url: String,
    child: Option<Kill>,
}

/// Variables of the test's own environment that must not reach the child.
const SCRUBBED: [&str; 8] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "LIVEGATE_LOG_FORMAT",
    "LIVEGATE_WORKER_THREADS",
];

impl Served {
    /// Start the gateway on `config` with `env`; stdout and stderr both go to `output.log`.
    pub async fn start(config: &str, env: &[(&str, &str)]) -> Served {
        let dir =
            std::env::temp_dir().join(format!("livegate-served-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config_path = dir.join("livegate.yaml");
        std::fs::write(&config_path, config).expect("config");
        let database_url = format!("sqlite:{}", dir.join("lg.db").display());
        let port = free_port();
        let out = std::fs::File::create(dir.join("output.log")).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_livegate"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &database_url)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for k in SCRUBBED {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = Kill(cmd.spawn().expect("spawn livegate serve"));
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!(
                    "livegate serve exited ({status}):\n{}",
                    std::fs::read_to_string(dir.join("output.log")).unwrap_or_default()
                );
            }
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < until, "livegate serve did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Served {
            base,
            dir,
            database_url,
            child: Some(child),
        }
    }

    /// Stop with SIGTERM (a graceful shutdown, flushing what it buffers) and return everything
    /// it wrote.
    /// The child's process id, to read its `/proc` entries.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.0.id())
    }

    pub async fn stop(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let pid = child.0.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let until = Instant::now() + Duration::from_secs(15);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.0.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            drop(child);
        }
        std::fs::read_to_string(self.dir.join("output.log")).expect("output")
    }
}
