//! The `/_sim` control API, the same on all three simulators.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Sim, answer, form_with, jpeg};

fn routers() -> [(&'static str, axum::Router); 3] {
    [
        ("didit", livegate_simulators::didit::router()),
        ("kairos", livegate_simulators::kairos::router()),
        ("collections", livegate_simulators::collections::router()),
    ]
}

#[tokio::test]
async fn bad_rules_are_400_with_a_reason() {
    for (name, router) in routers() {
        let sim = Sim::start(router).await;
        assert!(
            sim.bad_rule("{not json").await.contains("not JSON"),
            "{name}"
        );
        assert!(
            sim.bad_rule(r#"{"respond": {"scroe": 1}}"#)
                .await
                .contains("scroe"),
            "{name}"
        );
        assert!(
            sim.bad_rule(r#"{"respond": {"score": "high"}}"#)
                .await
                .contains("respond"),
            "{name}"
        );
        assert!(
            sim.bad_rule(r#"{"respond": {"score": -0.1}}"#)
                .await
                .contains("score"),
            "{name}"
        );
        assert!(
            sim.bad_rule(r#"{"respond": {"status": 700}}"#)
                .await
                .contains("status"),
            "{name}"
        );
        assert!(
            sim.bad_rule(r#"{"respond": {"spoof_type": "paper"}}"#)
                .await
                .contains("paper"),
            "{name}"
        );
        assert!(
            sim.bad_rule(r#"{"respond": {"bbox": [1, 2, 3]}}"#)
                .await
                .contains("respond"),
            "{name}"
        );
        assert!(
            sim.bad_rule(r#"{"match": {"image_sha256": "xyz"}}"#)
                .await
                .contains("image_sha256"),
            "{name}"
        );
        assert!(
            sim.bad_rule(r#"{"respond": {}, "extra": 1}"#)
                .await
                .contains("extra"),
            "{name}"
        );
        assert!(
            sim.bad_rule(r#"{"respond": {"times": 0}}"#)
                .await
                .contains("times"),
            "{name}"
        );
        assert!(sim.bad_rule("[]").await.contains("rule"), "{name}");
    }
    // A field of one vendor is unknown to the others.
    let didit = Sim::start(livegate_simulators::didit::router()).await;
    assert!(
        didit
            .bad_rule(r#"{"respond": {"shape": "flat"}}"#)
            .await
            .contains("shape")
    );
    let kairos = Sim::start(livegate_simulators::kairos::router()).await;
    assert!(
        kairos
            .bad_rule(r#"{"respond": {"error_style": "list"}}"#)
            .await
            .contains("error_style")
    );
    let engine = Sim::start(livegate_simulators::collections::router()).await;
    assert!(
        engine
            .bad_rule(r#"{"respond": {"decision": "Approved"}}"#)
            .await
            .contains("decision")
    );
    assert!(
        didit
            .bad_rule(r#"{"respond": {"quality": 101}}"#)
            .await
            .contains("quality")
    );
}

#[tokio::test]
async fn rules_are_listed_newest_first_and_cleared() {
    for (name, router) in routers() {
        let sim = Sim::start(router).await;
        let first = sim.rule(json!({"respond": {"score": 0.1}})).await;
        let second = sim
            .rule(json!({"respond": {"status": 500, "times": 3}}))
            .await;
        assert!(second > first);
        let listed: Vec<Value> = sim
            .client
            .get(sim.url("/_sim/rules"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed.len(), 2, "{name}");
        assert_eq!(listed[0]["id"], second);
        assert_eq!(listed[0]["remaining"], 3);
        assert_eq!(listed[0]["rule"]["respond"]["status"], 500);
        assert_eq!(listed[1]["remaining"], Value::Null);
        sim.delete("/_sim/rules").await;
        let listed: Vec<Value> = sim
            .client
            .get(sim.url("/_sim/rules"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(listed.is_empty());
    }
}

#[tokio::test]
async fn each_router_call_has_its_own_state() {
    let a = Sim::start(livegate_simulators::didit::router()).await;
    let b = Sim::start(livegate_simulators::didit::router()).await;
    a.rule(json!({"respond": {"status": 500}})).await;
    let request = |sim: &Sim| {
        sim.client
            .post(sim.url("/v3/passive-liveness/"))
            .header("x-api-key", "k")
            .multipart(form_with("user_image", jpeg(1)))
    };
    assert_eq!(
        answer(request(&a)).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(answer(request(&b)).await.status, StatusCode::OK);
    assert_eq!(a.requests().await.len(), 1);
    assert_eq!(b.requests().await.len(), 1);
}

#[tokio::test]
async fn serve_takes_a_bound_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    livegate_simulators::serve(listener, livegate_simulators::kairos::router())
        .await
        .unwrap();
    let response = reqwest::get(format!("http://{addr}/_sim/requests"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), json!([]));
}
