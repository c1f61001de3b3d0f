//! Face identity for every tenant through `POST /v1/liveness`: `duplicates` flags a face seen
//! in an earlier approved verification, `blocklist` declines a face an operator blocklisted,
//! whatever provider judged liveness (here the Didit simulator).

use livegate::config::KeyHash;
use serde_json::{Value, json};

use crate::engine_server::{models_dir, sample};
use crate::face_matching::photo;
use crate::harness::{ACME_KEY, Harness, Reply, SimUrls, postgres_url};

pub(crate) const DUP_KEY: &str = "lg_test_duplicates_tenant_0077";
const ADMIN_KEY: &str = "lg_admin_identity_tests_0099";

pub(crate) fn yaml(u: &SimUrls) -> String {
    format!(
        r#"
models_dir: "{models}"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "${{TEST_DIDIT_KEY}}", timeout_ms: 1500 }}
admin:
  keys: ["{admin}"]
tenants:
  dup_t:
    keys: ["{dup}"]
    threshold: 0.8
    routing: {{ strategy: single, providers: [didit] }}
    duplicates: true
    blocklist: true
  acme:
    keys: ["{acme}"]
    threshold: 0.8
    routing: {{ strategy: single, providers: [didit] }}
"#,
        models = models_dir(),
        didit = u.didit,
        admin = KeyHash::of_key(ADMIN_KEY),
        dup = KeyHash::of_key(DUP_KEY),
        acme = KeyHash::of_key(ACME_KEY),
    )
}

/// The first selfie of the astronaut, approved by a live score; its verification id.
pub(crate) async fn approved_astronaut(h: &Harness) -> String {
    h.sim_rule(json!({"score": 0.97})).await;
    let first = h
        .liveness(DUP_KEY, "image", photo("astronaut.jpg"), &[])
        .await;
    assert_eq!(first.body["decision"], "approved", "{}", first.body);
    first.body["id"].as_str().expect("id").to_owned()
}

fn codes(r: &Reply) -> Vec<String> {
    r.body["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings: {}", r.body))
        .iter()
        .filter_map(|w| w["code"].as_str().map(str::to_owned))
        .collect()
}

fn warning<'a>(r: &'a Reply, code: &str) -> &'a Value {
    r.body["warnings"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["code"] == code))
        .unwrap_or_else(|| panic!("no {code}: {}", r.body))
}

async fn admin(h: &Harness, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
    let mut req = h
        .client
        .request(method, format!("{}{path}", h.base))
        .bearer_auth(ADMIN_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    Harness::reply(req.send().await.expect("send")).await
}

crate::backend_matrix!(
    yaml = yaml;
    same_face_twice_is_a_duplicate,
    blocklisted_face_is_declined,
    tenants_without_checks_keep_nothing,
    two_identical_selfies_at_once_are_not_both_new,
);

/// The same face twice at the same moment: one is new, the other its duplicate, however the
/// two interleave.
async fn two_identical_selfies_at_once_are_not_both_new(h: Harness) {
    same_face_at_once(&h, &h).await;
}

/// Each round sends one selfie to `a` and the same to `b` at once: the first round has
/// nothing before it, so exactly one is new; later rounds repeat a known face.
async fn same_face_at_once(a: &Harness, b: &Harness) {
    a.sim_rule(json!({"score": 0.97})).await;
    b.sim_rule(json!({"score": 0.97})).await;
    for round in 0..3 {
        let image = if round % 2 == 0 {
            photo("astronaut.jpg")
        } else {
            photo("astronaut_variant.jpg")
        };
        let (x, y) = tokio::join!(
            a.liveness(DUP_KEY, "image", image.clone(), &[]),
            b.liveness(DUP_KEY, "image", image, &[]),
        );
        let clean = [&x, &y]
            .iter()
            .filter(|r| r.body["decision"] == "approved" && codes(r).is_empty())
            .count();
        let expected = usize::from(round == 0);
        assert_eq!(clean, expected, "round {round}: {} / {}", x.body, y.body);
        for r in [&x, &y] {
            assert!(
                codes(r).is_empty() || codes(r) == ["DUPLICATED_FACE"],
                "{}",
                r.body
            );
        }
    }
}

/// Two gateways on one Postgres: the tenant's turn is the database's, so they cannot both
/// take the same face for new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_do_not_both_approve_one_face() {
    let schema = format!("lg_test_{}", uuid::Uuid::new_v4().simple());
    let mut stores = Vec::new();
    for _ in 0..2 {
        match livegate::store::PgStore::connect_in_schema(&postgres_url(), &schema).await {
            Ok(s) => stores.push(std::sync::Arc::new(s) as livegate::store::DynStore),
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: Postgres not reachable ({e}); set CI=1 to make this fatal");
                return;
            }
            Err(e) => panic!("Postgres is required under CI: {e}"),
        }
    }
    stores[0].migrate().await.expect("migrate");
    let b = Harness::start_on(stores.remove(1), yaml, Default::default(), None).await;
    let a = Harness::start_on(stores.remove(0), yaml, Default::default(), None).await;
    same_face_at_once(&a, &b).await;
}

async fn same_face_twice_is_a_duplicate(h: Harness) {
    // Didit approves everything here: the duplicate is livegate's own finding.
    h.sim_rule(json!({"score": 0.97})).await;
    let first = h
        .liveness(DUP_KEY, "image", photo("astronaut.jpg"), &[])
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["decision"], "approved", "{}", first.body);
    assert!(codes(&first).is_empty(), "{}", first.body);
    let first_id = first.body["id"].as_str().expect("id").to_owned();

    // Someone else: no match.
    let other = h.liveness(DUP_KEY, "image", sample("real.jpg"), &[]).await;
    assert_eq!(other.body["decision"], "approved", "{}", other.body);
    assert!(codes(&other).is_empty(), "{}", other.body);

    // The same person again, in another photo.
    let again = h
        .liveness(DUP_KEY, "image", photo("astronaut_variant.jpg"), &[])
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    let w = warning(&again, "DUPLICATED_FACE");
    assert_eq!(
        w["matched_verification_id"],
        first_id.as_str(),
        "{}",
        again.body
    );
    assert!(w["similarity"].as_f64().is_some_and(|s| s >= 0.95), "{w}");
    // DUPLICATED_FACE has no action by default: a warning, not a decline.
    assert_eq!(again.body["decision"], "approved");

    // Stored with the verification, and read back the same.
    let id = again.body["id"].as_str().expect("id");
    let got = h.get(DUP_KEY, &format!("/v1/verifications/{id}")).await;
    assert_eq!(got.body["warnings"], again.body["warnings"]);
    let (row, _) = h.row("dup_t", id).await;
    assert!(row.warnings.to_string().contains(&first_id));
    // Every face of the tenant is kept as an embedding (three verifications).
    let kept = h
        .store
        .approved_faces_after("dup_t", 0)
        .await
        .expect("faces");
    assert_eq!(kept.len(), 3);
    assert!(kept.iter().all(|f| f.embedding.len() == 128));
}

async fn blocklisted_face_is_declined(h: Harness) {
    let first_id = approved_astronaut(&h).await;

    let path = "/admin/v1/tenants/dup_t/blocklist";
    let r = admin(
        &h,
        reqwest::Method::POST,
        path,
        Some(json!({"verification_id": first_id, "reason": "fraud ring"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["verification_id"], first_id.as_str());
    let again = admin(
        &h,
        reqwest::Method::POST,
        path,
        Some(json!({"verification_id": first_id})),
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.body);
    let listed = admin(&h, reqwest::Method::GET, path, None).await;
    assert_eq!(
        listed.body["data"][0]["reason"], "fraud ring",
        "{}",
        listed.body
    );

    // The same person, another photo: declined by the default action of FACE_IN_BLOCKLIST.
    let r = h
        .liveness(DUP_KEY, "image", photo("astronaut_variant.jpg"), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["decision"], "declined", "{}", r.body);
    assert_eq!(r.body["is_live"], false);
    let w = warning(&r, "FACE_IN_BLOCKLIST");
    assert_eq!(w["matched_verification_id"], first_id.as_str());
    let (row, _) = h.row("dup_t", r.body["id"].as_str().expect("id")).await;
    assert_eq!(row.decision.as_deref(), Some("declined"));

    // Someone else passes.
    let other = h.liveness(DUP_KEY, "image", sample("real.jpg"), &[]).await;
    assert_eq!(other.body["decision"], "approved", "{}", other.body);

    // Removed from the blocklist: no longer declined (now only a duplicate of the first).
    // Once removed, a second removal finds nothing.
    for status in [204, 404] {
        let r = admin(
            &h,
            reqwest::Method::DELETE,
            &format!("{path}/{first_id}"),
            None,
        )
        .await;
        assert_eq!(r.status, status, "{}", r.body);
    }
    let r = h
        .liveness(DUP_KEY, "image", photo("astronaut_variant.jpg"), &[])
        .await;
    assert_eq!(r.body["decision"], "approved", "{}", r.body);
    assert_eq!(codes(&r), ["DUPLICATED_FACE"], "{}", r.body);

    // Operators only; unknown tenants and unknown verifications are 404s.
    let tenant_key = h
        .client
        .get(format!("{}{path}", h.base))
        .bearer_auth(DUP_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(tenant_key.status().as_u16(), 403);
    let r = admin(
        &h,
        reqwest::Method::GET,
        "/admin/v1/tenants/nope/blocklist",
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = admin(
        &h,
        reqwest::Method::POST,
        path,
        Some(json!({"verification_id": uuid::Uuid::now_v7()})),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body["code"], "face_not_found", "{}", r.body);
}

async fn tenants_without_checks_keep_nothing(h: Harness) {
    h.sim_rule(json!({"score": 0.97})).await;
    for image in [photo("astronaut.jpg"), photo("astronaut_variant.jpg")] {
        let r = h.liveness(ACME_KEY, "image", image, &[]).await;
        assert_eq!(r.body["decision"], "approved", "{}", r.body);
        assert!(codes(&r).is_empty(), "{}", r.body);
    }
    let kept = h
        .store
        .approved_faces_after("acme", 0)
        .await
        .expect("faces");
    assert!(kept.is_empty());
}
