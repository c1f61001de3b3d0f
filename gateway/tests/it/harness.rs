//! Test harness: a gateway on a port-0 listener, backed by SQLite or Postgres, in front of the
//! simulators; a client whose calls return status + JSON; direct store access for row checks.

use std::net::SocketAddr;
use std::sync::Arc;

use livegate::config::{Config, KeyHash};
use livegate::http::{AppState, router};
use livegate::runtime::Runtime;
use livegate::store::{self, DynStore, PgStore};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const ACME_KEY: &str = "lg_test_acme_key_0123456789";
pub const BETA_KEY: &str = "lg_test_beta_key_9876543210";
pub const KAIROS_KEY: &str = "lg_test_kairos_tenant_key_55";
pub const COLL_KEY: &str = "lg_test_collections_tenant_key_66";
pub const DIDIT_SECRET: &str = "didit-secret-value-4242";
pub const KAIROS_APP_ID: &str = "kairos-app-id-1717";
pub const KAIROS_APP_KEY: &str = "kairos-app-key-secret-1818";
/// A well-formed collections-engine key (`fr_test_` + 32 hex).
pub const COLL_SECRET: &str = "fr_test_0123456789abcdef0123456789abcdef";

/// Which simulator a rule or request log belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sim {
    Didit,
    Kairos,
    Collections,
}

/// `router` (a simulator, a collector) on a loopback port; its base URL.
pub async fn spawn_sim(router: axum::Router) -> String {
    format!(
        "http://{}",
        livegate_simulators::spawn(router).await.expect("simulator")
    )
}

/// Adds a rule (`{"respond": respond}`) to the simulator at `base`.
pub async fn sim_rule_at(client: &reqwest::Client, base: &str, respond: Value) {
    let resp = client
        .post(format!("{base}/_sim/rules"))
        .json(&json!({ "respond": respond }))
        .send()
        .await
        .expect("rule");
    assert_eq!(
        resp.status().as_u16(),
        201,
        "rule rejected: {}",
        resp.text().await.unwrap_or_default()
    );
}

/// Every request the simulator at `base` received, oldest first.
pub async fn sim_requests_at(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let v: Value = client
        .get(format!("{base}/_sim/requests"))
        .send()
        .await
        .expect("requests")
        .json()
        .await
        .expect("json");
    v.as_array().expect("array").clone()
}

/// `GET url` as text (e.g. `/metrics`).
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

pub fn postgres_url() -> String {
    std::env::var("LIVEGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh, isolated store. Postgres tests fail loudly under CI when the server is missing,
/// and are skipped (with a note) on a developer machine without one.
pub async fn open_store(backend: Backend) -> Option<DynStore> {
    let s: DynStore = match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir()
                .join(format!("livegate-test-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let url = format!("sqlite:{}", dir.join("t.db").display());
            store::connect(&url).await.expect("sqlite store")
        }
        Backend::Postgres => {
            let schema = format!("lg_test_{}", uuid::Uuid::new_v4().simple());
            match PgStore::connect_in_schema(&postgres_url(), &schema).await {
                Ok(s) => Arc::new(s),
                Err(e) if std::env::var_os("CI").is_none() => {
                    eprintln!(
                        "SKIPPED: Postgres not reachable at {} ({e}); set CI=1 to make this fatal",
                        postgres_url()
                    );
                    return None;
                }
                Err(e) => panic!(
                    "Postgres is required under CI but not reachable at {}: {e}",
                    postgres_url()
                ),
            }
        }
    };
    s.migrate().await.expect("migrate");
    Some(s)
}

pub struct Harness {
    pub base: String,
    pub client: reqwest::Client,
    pub store: DynStore,
    pub didit: String,
    pub kairos: String,
    pub collections: String,
    pub state: AppState,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// Base URLs of the three simulators, for building configs.
pub struct SimUrls<'a> {
    pub didit: &'a str,
    pub kairos: &'a str,
    pub collections: &'a str,
}

/// The default test config: tenants `acme` (threshold 0.8) and `beta` on Didit, `kairos_t` on
/// Kairos and `coll_t` on the collections engine (threshold 0.8 both).
pub fn default_yaml(u: &SimUrls) -> String {
    let (didit, kairos, collections) = (u.didit, u.kairos, u.collections);
    format!(
        r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "${{TEST_DIDIT_KEY}}", timeout_ms: 1500 }}
  kairos: {{ kind: kairos, base_url: "{kairos}", app_id: "{kid}", app_key: "${{TEST_KAIROS_KEY}}", timeout_ms: 1500 }}
  engine: {{ kind: collections, base_url: "{collections}", api_key: "${{TEST_COLL_KEY}}", collection_id: "selfies", timeout_ms: 1500 }}
limits: {{ max_pixels: 4000000 }}
tenants:
  acme:
    keys: ["{acme}"]
    threshold: 0.8
    routing: {{ strategy: single, providers: [didit] }}
  beta:
    keys: ["{beta}"]
    threshold: 0.5
    routing: {{ strategy: single, providers: [didit] }}
  kairos_t:
    keys: ["{kt}"]
    threshold: 0.8
    routing: {{ strategy: single, providers: [kairos] }}
  coll_t:
    keys: ["{ct}"]
    threshold: 0.8
    routing: {{ strategy: single, providers: [engine] }}
"#,
        acme = KeyHash::of_key(ACME_KEY),
        beta = KeyHash::of_key(BETA_KEY),
        kt = KeyHash::of_key(KAIROS_KEY),
        ct = KeyHash::of_key(COLL_KEY),
        kid = KAIROS_APP_ID,
    )
}

impl Harness {
    pub async fn start(backend: Backend) -> Option<Harness> {
        Self::start_with(backend, default_yaml).await
    }

    pub async fn start_with(
        backend: Backend,
        yaml: impl FnOnce(&SimUrls) -> String,
    ) -> Option<Harness> {
        Self::start_with_search(backend, yaml, Default::default()).await
    }

    /// With the face-search tuning of the tenants' duplicate checks.
    pub async fn start_with_search(
        backend: Backend,
        yaml: impl FnOnce(&SimUrls) -> String,
        search: livegate_engine::search::IndexOptions,
    ) -> Option<Harness> {
        let store = open_store(backend).await?;
        Some(Self::start_on(store, yaml, search, None).await)
    }

    /// On a store the test opened itself (e.g. through a proxy it can cut).
    pub async fn start_on(
        store: DynStore,
        yaml: impl FnOnce(&SimUrls) -> String,
        search: livegate_engine::search::IndexOptions,
        spool: Option<Arc<livegate::store::spool::Spool>>,
    ) -> Harness {
        use livegate_simulators as sims;
        let url = |a: std::net::SocketAddr| format!("http://{a}");
        let didit = url(sims::spawn(sims::didit::router()).await.expect("sim"));
        let kairos = url(sims::spawn(sims::kairos::router()).await.expect("sim"));
        let collections = url(sims::spawn(sims::collections::router()).await.expect("sim"));
        let text = yaml(&SimUrls {
            didit: &didit,
            kairos: &kairos,
            collections: &collections,
        });
        let config = Config::parse(&text, &|name| match name {
            "TEST_DIDIT_KEY" => Some(DIDIT_SECRET.to_owned()),
            "TEST_KAIROS_KEY" => Some(KAIROS_APP_KEY.to_owned()),
            "TEST_COLL_KEY" => Some(COLL_SECRET.to_owned()),
            _ => None,
        })
        .expect("test config");
        let runtime = Runtime::build(config, None).expect("runtime");
        let mut state = AppState::new(runtime, store.clone());
        state.identity = std::sync::Arc::new(livegate::check::faces::Identity::new(search));
        state.spool = spool;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let app = router(state.clone());
        let limits = state.runtime.load().config.server.clone();
        tokio::spawn(livegate::http::server::serve(
            listener,
            app,
            limits,
            std::future::pending(),
        ));
        Harness {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            store,
            didit,
            kairos,
            collections,
            state,
        }
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends the request and reads its reply.
    pub async fn call(request: reqwest::RequestBuilder) -> Reply {
        Self::reply(request.send().await.expect("send")).await
    }

    pub async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Multipart `POST /v1/liveness` with the image in `field` and extra text fields.
    pub async fn liveness(
        &self,
        key: &str,
        field: &str,
        image: Vec<u8>,
        fields: &[(&str, &str)],
    ) -> Reply {
        let mut form = reqwest::multipart::Form::new().part(
            field.to_owned(),
            reqwest::multipart::Part::bytes(image).file_name("selfie.jpg"),
        );
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        let resp = self
            .client
            .post(format!("{}/v1/liveness", self.base))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .expect("send");
        Self::reply(resp).await
    }

    /// Multipart `POST /v1/liveness` of `image` with an `Idempotency-Key`.
    pub async fn liveness_with_key(
        &self,
        key: &str,
        idempotency_key: &str,
        image: Vec<u8>,
    ) -> Reply {
        let form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(image).file_name("selfie.jpg"),
        );
        let request = self
            .client
            .post(self.url("/v1/liveness"))
            .bearer_auth(key)
            .header("idempotency-key", idempotency_key)
            .multipart(form);
        Self::call(request).await
    }

    pub async fn get(&self, key: &str, path: &str) -> Reply {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header("x-api-key", key)
            .send()
            .await
            .expect("send");
        Self::reply(resp).await
    }

    pub fn sim_url(&self, sim: Sim) -> &str {
        match sim {
            Sim::Didit => &self.didit,
            Sim::Kairos => &self.kairos,
            Sim::Collections => &self.collections,
        }
    }

    pub async fn sim_rule(&self, respond: Value) {
        self.sim_rule_on(Sim::Didit, respond).await
    }

    pub async fn sim_rule_on(&self, sim: Sim, respond: Value) {
        sim_rule_at(&self.client, self.sim_url(sim), respond).await
    }

    pub async fn sim_requests(&self) -> Vec<Value> {
        self.sim_requests_on(Sim::Didit).await
    }

    pub async fn sim_requests_on(&self, sim: Sim) -> Vec<Value> {
        sim_requests_at(&self.client, self.sim_url(sim)).await
    }

    /// Waits (5 s at most) until the Didit simulator has received `n` requests: those requests
    /// are admitted and in flight, whatever the machine's load.
    pub async fn sim_received(&self, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.sim_requests().await.len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the simulator never received {n} requests"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The stored row and attempts behind an answer's id.
    pub async fn row(
        &self,
        tenant: &str,
        id: &str,
    ) -> (
        livegate::store::VerificationRecord,
        Vec<livegate::store::AttemptRecord>,
    ) {
        let id = uuid::Uuid::parse_str(id).expect("uuid");
        let v = self.store.get_verification(tenant, id).await.expect("row");
        let a = self.store.attempts(id).await.expect("attempts");
        (v, a)
    }

    /// The newest row of a tenant (for failures, whose problem body has no verification id).
    pub async fn last_row(
        &self,
        tenant: &str,
    ) -> (
        livegate::store::VerificationRecord,
        Vec<livegate::store::AttemptRecord>,
    ) {
        let f = livegate::store::ListFilter {
            limit: 1,
            ..Default::default()
        };
        let rows = self
            .store
            .list_verifications(tenant, &f)
            .await
            .expect("list");
        let v = rows.into_iter().next().expect("a row was written");
        let a = self.store.attempts(v.id).await.expect("attempts");
        (v, a)
    }

    pub async fn row_count(&self, tenant: &str) -> usize {
        let f = livegate::store::ListFilter {
            limit: 200,
            ..Default::default()
        };
        self.store
            .list_verifications(tenant, &f)
            .await
            .expect("list")
            .len()
    }
}

/// Kills a child process when dropped, a panicking test included.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `POST {base}/v1/liveness` with `image` as a multipart file named `name`, to any server.
pub async fn post_selfie(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    image: Vec<u8>,
    name: &str,
) -> reqwest::Response {
    selfie_request(client, base, key, image, name)
        .send()
        .await
        .expect("send")
}

/// The request [`post_selfie`] sends, to send later (e.g. from a task).
pub fn selfie_request(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    image: Vec<u8>,
    name: &str,
) -> reqwest::RequestBuilder {
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(image).file_name(name.to_owned()),
    );
    client
        .post(format!("{base}/v1/liveness"))
        .bearer_auth(key)
        .multipart(form)
}

/// A port nothing listens on right now (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A 640x480 JPEG whose content (and so SHA-256) depends on `seed`.
pub fn jpeg(seed: u8) -> Vec<u8> {
    encode(640, 480, seed, image::ImageFormat::Jpeg)
}

/// A 96x96 JPEG: cheap enough to make hundreds of at once.
pub fn small_jpeg(seed: u8) -> Vec<u8> {
    encode(96, 96, seed, image::ImageFormat::Jpeg)
}

pub fn encode(w: u32, h: u32, seed: u8, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x as u8).wrapping_add(seed),
            (y as u8).wrapping_mul(3),
            seed.wrapping_mul(7),
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .expect("encode");
    out.into_inner()
}

/// One test per case and backend (SQLite, Postgres); Postgres cases are skipped when it is
/// unavailable, except under CI. `backend_matrix!(a, b)` hands each case a `Harness` on the
/// default config, `backend_matrix!(yaml = f; a, b)` one on the config `f` writes, and
/// `backend_matrix!(backend; a, b)` the `Backend` itself.
#[macro_export]
macro_rules! backend_matrix {
    (@run $backend:ident, [harness], $case:ident) => {
        if let Some(h) = $crate::harness::Harness::start($crate::harness::Backend::$backend).await {
            super::$case(h).await;
        }
    };
    (@run $backend:ident, [yaml $yaml:ident], $case:ident) => {
        if let Some(h) =
            $crate::harness::Harness::start_with($crate::harness::Backend::$backend, super::$yaml)
                .await
        {
            super::$case(h).await;
        }
    };
    (@run $backend:ident, [backend], $case:ident) => {
        super::$case($crate::harness::Backend::$backend).await;
    };
    (@mods $how:tt; $($case:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::backend_matrix!(@run Sqlite, $how, $case);
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::backend_matrix!(@run Postgres, $how, $case);
                }
            )*
        }
    };
    (yaml = $yaml:ident; $($case:ident),* $(,)?) => {
        $crate::backend_matrix!(@mods [yaml $yaml]; $($case),*);
    };
    (backend; $($case:ident),* $(,)?) => {
        $crate::backend_matrix!(@mods [backend]; $($case),*);
    };
    ($($case:ident),* $(,)?) => {
        $crate::backend_matrix!(@mods [harness]; $($case),*);
    };
}
