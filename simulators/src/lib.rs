//! Wire-compatible fake upstreams for livegate's tests and `livegate simulate`.
//!
//! Each simulator answers like its vendor's documents say (the contradictions between vendor
//! pages included) and can be told, through the shared `/_sim/*` control API, to answer with
//! any documented variant or fault. See `README.md` in this crate for the rule fields.
//!
//! The simulators are written from the vendor documents alone, independently of the provider
//! adapters, so that a misreading in one is caught by the other instead of being shared.

mod control;
mod faces;
mod inbound;

pub mod collections;
pub mod didit;
pub mod kairos;

use std::net::{Ipv4Addr, SocketAddr};

use sha2::{Digest, Sha256};

/// Serves `router` on an already bound listener from a background tokio task.
///
/// Taking a listener rather than an address lets callers bind port 0 (or a socket handed over
/// by a supervisor) and know the address before the first request can arrive.
pub async fn serve(listener: tokio::net::TcpListener, router: axum::Router) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%addr, %error, "simulator stopped");
        }
    });
    Ok(())
}

/// Binds `127.0.0.1:0`, serves `router` there and returns the bound address (test helper).
pub async fn spawn(router: axum::Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    serve(listener, router).await?;
    Ok(addr)
}

/// The liveness score (0-1) every simulator gives `image` when no rule sets one, so tests can
/// predict the default answer: the first four bytes of the image's SHA-256, big-endian, over
/// `u32::MAX`.
pub fn default_score_for(image: &[u8]) -> f64 {
    let digest: [u8; 32] = Sha256::digest(image).into();
    inbound::Seed(digest).unit(0)
}
