use serde_json::json;

use crate::harness::{ACME_KEY, BETA_KEY, Harness, jpeg};

crate::backend_matrix!(
    tenant_isolation,
    pagination_and_filters,
    health_and_problems,
    malformed_queries_answer_problems
);

/// A query axum cannot even parse (a repeated field) is a problem+json like any other error.
async fn malformed_queries_answer_problems(h: Harness) {
    for query in ["since=null&since=null", "limit=1&limit=2"] {
        let r = h.get(ACME_KEY, &format!("/v1/verifications?{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert_eq!(r.body["code"], "invalid_query", "{query}");
        assert_eq!(
            r.headers["content-type"], "application/problem+json",
            "{query}"
        );
    }
}

async fn tenant_isolation(h: Harness) {
    h.sim_rule(json!({"score": 0.9})).await;
    let r = h.liveness(ACME_KEY, "image", jpeg(1), &[]).await;
    assert_eq!(r.status, 200);
    let id = r.body["id"].as_str().expect("id").to_owned();

    let mine = h.get(ACME_KEY, &format!("/v1/verifications/{id}")).await;
    assert_eq!(mine.status, 200);
    assert_eq!(mine.body["id"], id.as_str());
    assert_eq!(mine.body["decision"], r.body["decision"]);
    assert_eq!(mine.body["attempts"], r.body["attempts"]);

    let theirs = h.get(BETA_KEY, &format!("/v1/verifications/{id}")).await;
    assert_eq!(theirs.status, 404);
    assert_eq!(theirs.body["code"], "not_found");
    let list = h.get(BETA_KEY, "/v1/verifications").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["data"], json!([]));
    assert_eq!(
        h.get(ACME_KEY, "/v1/verifications/not-a-uuid").await.status,
        404
    );
    assert_eq!(
        h.get("nope", &format!("/v1/verifications/{id}"))
            .await
            .status,
        401
    );
}

async fn pagination_and_filters(h: Harness) {
    h.sim_rule(json!({"score": 0.9, "times": 3})).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = h.liveness(ACME_KEY, "image", jpeg(20 + i), &[]).await;
        assert_eq!(r.body["decision"], "approved");
        ids.push(r.body["id"].as_str().expect("id").to_owned());
    }
    h.sim_rule(json!({"score": 0.1})).await;
    let r = h.liveness(ACME_KEY, "image", jpeg(30), &[]).await;
    assert_eq!(r.body["decision"], "declined");
    let declined_id = r.body["id"].as_str().expect("id").to_owned();

    let p1 = h.get(ACME_KEY, "/v1/verifications?limit=2").await;
    assert_eq!(p1.status, 200, "{}", p1.body);
    let got: Vec<&str> = p1.body["data"]
        .as_array()
        .expect("d")
        .iter()
        .map(|v| v["id"].as_str().expect("id"))
        .collect();
    assert_eq!(got, [declined_id.as_str(), ids[2].as_str()], "newest first");
    let cursor = p1.body["next_cursor"].as_str().expect("cursor").to_owned();
    let p2 = h
        .get(
            ACME_KEY,
            &format!("/v1/verifications?limit=2&cursor={cursor}"),
        )
        .await;
    let got: Vec<&str> = p2.body["data"]
        .as_array()
        .expect("d")
        .iter()
        .map(|v| v["id"].as_str().expect("id"))
        .collect();
    assert_eq!(got, [ids[1].as_str(), ids[0].as_str()]);
    let p3 = h
        .get(
            ACME_KEY,
            &format!("/v1/verifications?limit=2&cursor={}", ids[0]),
        )
        .await;
    assert_eq!(p3.body["data"], json!([]));
    assert_eq!(p3.body["next_cursor"], serde_json::Value::Null);

    let declined = h.get(ACME_KEY, "/v1/verifications?decision=declined").await;
    assert_eq!(declined.body["data"].as_array().expect("d").len(), 1);
    let future = h
        .get(ACME_KEY, "/v1/verifications?since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(future.body["data"], json!([]));
    let past = h
        .get(ACME_KEY, "/v1/verifications?since=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(past.body["data"].as_array().expect("d").len(), 4);
    for bad in [
        "limit=0",
        "limit=201",
        "limit=x",
        "decision=maybe",
        "since=yesterday",
        "cursor=zzz",
    ] {
        let r = h.get(ACME_KEY, &format!("/v1/verifications?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.headers["content-type"], "application/problem+json");
    }
}

async fn health_and_problems(h: Harness) {
    assert_eq!(h.get("", "/healthz").await.status, 200);
    let ready = h.get("", "/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["checks"]["database"], "ok");
    let nf = h.get("", "/nope").await;
    assert_eq!(nf.status, 404);
    assert_eq!(nf.headers["content-type"], "application/problem+json");
    let rid = nf.headers["x-request-id"].to_str().expect("rid");
    assert_eq!(nf.body["request_id"], rid);
    let resp = h
        .client
        .get(format!("{}/v1/liveness", h.base))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 405);
}

fn retrying_yaml(u: &crate::harness::SimUrls) -> String {
    crate::harness::default_yaml(u).replacen(
        "timeout_ms: 1500 }",
        "timeout_ms: 1500, retries: 1 }",
        1,
    )
}

/// The list is read in one query (the page joined to its attempts): each item, with its
/// attempts in order, is the same document as `GET /v1/verifications/{id}`: two attempts, one,
/// and none (a refused image).
async fn the_list_matches_each_verification(h: Harness) {
    h.sim_rule(json!({"status": 503, "times": 1})).await;
    let retried = h.liveness(ACME_KEY, "image", jpeg(31), &[]).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.body["attempts"].as_array().map(Vec::len), Some(2));
    h.sim_rule(json!({"score": 0.9})).await;
    assert_eq!(
        h.liveness(ACME_KEY, "image", jpeg(32), &[]).await.status,
        200
    );
    assert_eq!(
        h.liveness(ACME_KEY, "image", b"GIF89a".to_vec(), &[])
            .await
            .status,
        415
    );
    let list = h.get(ACME_KEY, "/v1/verifications?limit=2").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let page = list.body["data"].as_array().expect("data").clone();
    assert_eq!(page.len(), 2);
    let next = list.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let rest = h
        .get(
            ACME_KEY,
            &format!("/v1/verifications?limit=2&cursor={next}"),
        )
        .await;
    let all: Vec<serde_json::Value> = page
        .into_iter()
        .chain(rest.body["data"].as_array().expect("data").iter().cloned())
        .collect();
    assert_eq!(all.len(), 3);
    let counts: Vec<usize> = all
        .iter()
        .map(|v| v["attempts"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(counts, vec![0, 1, 2]);
    for v in &all {
        let id = v["id"].as_str().expect("id");
        let one = h.get(ACME_KEY, &format!("/v1/verifications/{id}")).await;
        assert_eq!(&one.body, v);
    }
}

mod listed {
    crate::backend_matrix!(yaml = retrying_yaml; the_list_matches_each_verification);
    use super::*;
}
