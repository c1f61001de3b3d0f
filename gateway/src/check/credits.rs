//! Credits: what a check may cost is reserved at admission, what it did cost is kept at
//! settlement and the rest goes back. Reservations go through the group-commit writer, so a
//! tenant's balance row is locked once per batch rather than once per request, and the check
//! and the decrement happen in the same transaction (no check-then-increment race).

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use crate::config::{Config, Tenant};
use crate::error::{ApiError, ErrorCode};
use crate::store::ledger::{ReserveOutcome, ReserveRequest, Settlement};
use crate::store::writers::Writers;
use crate::store::{DynStore, StoreError};

/// Credits held for one verification until it settles.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: Uuid,
    pub tenant_id: String,
    pub amount: i64,
    /// The balance right after reserving.
    pub balance_after: i64,
}

impl Reservation {
    /// Keep the cost of the provider that answered (nothing when no verdict was reached).
    pub fn settle(&self, charged: i64) -> Settlement {
        Settlement {
            reservation_id: self.id,
            tenant_id: self.tenant_id.clone(),
            reserved: self.amount,
            charged: charged.min(self.amount),
        }
    }

    /// The balance once settled with `charged` kept.
    pub fn remaining(&self, charged: i64) -> i64 {
        self.balance_after + self.amount - charged.min(self.amount)
    }
}

/// The most a check can cost: the dearest provider the route may end on. A fallback chain can
/// answer from any of its providers; shadows are never charged and are not in this list.
pub fn max_cost(tenant: &Tenant, candidates: &[String]) -> i64 {
    let Some(c) = &tenant.credits else { return 0 };
    candidates.iter().map(|p| c.cost_of(p)).max().unwrap_or(0)
}

pub fn insufficient(balance: i64, needed: i64) -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::InsufficientCredits,
        format!("this check needs {needed} credits and the balance is {balance}"),
    );
    e.balance = Some(balance);
    e
}

/// The `outcome` of the credits span.
pub fn outcome_label(reserved: &Result<Option<Reservation>, ApiError>) -> &'static str {
    match reserved {
        Ok(Some(_)) => "reserved",
        Ok(None) => "unmetered",
        Err(e) if e.code == ErrorCode::InsufficientCredits => "insufficient",
        Err(_) => "error",
    }
}

/// Reserve `amount` for a metered tenant under the reservation `id`. Opens the account on first
/// use (a tenant added by a config reload). The caller chooses the id, so that a reservation
/// whose commit nobody heard acknowledged can still be released by it.
pub async fn reserve(
    store: &DynStore,
    writers: &Writers,
    tenant: &Tenant,
    id: Uuid,
    amount: i64,
    ttl: Duration,
) -> Result<Option<Reservation>, ApiError> {
    let Some(credits) = &tenant.credits else {
        return Ok(None);
    };
    let expires_at = Utc::now()
        + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::seconds(120));
    let req = ReserveRequest {
        id,
        tenant_id: tenant.id.clone(),
        amount,
        expires_at,
    };
    for _ in 0..2 {
        match writers
            .reserve
            .submit(req.clone())
            .await
            .map_err(ApiError::store)?
        {
            ReserveOutcome::Reserved { balance } => {
                return Ok(Some(Reservation {
                    id: req.id,
                    tenant_id: req.tenant_id,
                    amount,
                    balance_after: balance,
                }));
            }
            ReserveOutcome::Insufficient { balance } => return Err(insufficient(balance, amount)),
            ReserveOutcome::NoAccount => {
                store
                    .ensure_account(&tenant.id, credits.initial)
                    .await
                    .map_err(ApiError::store)?;
            }
        }
    }
    Err(ApiError::internal(StoreError::Other(format!(
        "tenant {} has no credit account",
        tenant.id
    ))))
}

/// Open the account of every metered tenant (the initial balance is applied once, ever).
pub async fn open_accounts(store: &DynStore, config: &Config) -> Result<(), StoreError> {
    for t in config.tenants.values() {
        if let Some(c) = &t.credits
            && store.ensure_account(&t.id, c.initial).await?
        {
            tracing::info!(tenant = %t.id, initial = c.initial, "credit account opened");
        }
    }
    Ok(())
}
