//! A tenant's webhook events: one outbox message per configured endpoint that wants the
//! event, written with what it tells (`store/webhooks.rs`), sent by `http/webhooks.rs`.

use chrono::{SecondsFormat, Utc};
use uuid::Uuid;

use crate::check::verdict::Verification;
use crate::config::Tenant;
use crate::store::webhooks::OutboxMessage;

pub const VERIFICATION_COMPLETED: &str = "verification.completed";
pub const REVIEW_RESOLVED: &str = "review.resolved";

/// The messages for `event` about `v`; none for a tenant without webhooks.
pub fn messages(tenant: &Tenant, event: &str, v: &Verification) -> Vec<OutboxMessage> {
    let endpoints: Vec<_> = tenant.webhooks.iter().filter(|w| w.wants(event)).collect();
    if endpoints.is_empty() {
        return Vec::new();
    }
    let now = Utc::now();
    // Standard Webhooks' payload shape: the event type, when it happened, and its data.
    let body = serde_json::json!({
        "type": event,
        "timestamp": now.to_rfc3339_opts(SecondsFormat::Micros, true),
        "data": v,
    })
    .to_string();
    endpoints
        .into_iter()
        .map(|w| OutboxMessage {
            id: Uuid::now_v7(),
            tenant_id: tenant.id.clone(),
            url: w.url.to_string(),
            event: event.to_owned(),
            verification_id: Some(v.id),
            payload: body.clone(),
            created_at: now,
        })
        .collect()
}
