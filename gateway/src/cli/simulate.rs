//! `livegate simulate`: the upstream simulators, any subset in one process.

use std::net::SocketAddr;

use anyhow::Context;

use crate::cli::serve::shutdown_signal;

pub async fn simulate(
    didit: Option<SocketAddr>,
    kairos: Option<SocketAddr>,
    collections: Option<SocketAddr>,
) -> anyhow::Result<()> {
    use livegate_simulators as sims;
    if didit.is_none() && kairos.is_none() && collections.is_none() {
        anyhow::bail!(
            "name at least one simulator: --didit ADDR, --kairos ADDR or --collections ADDR"
        );
    }
    let all = [
        ("didit", didit, sims::didit::router as fn() -> axum::Router),
        ("kairos", kairos, sims::kairos::router),
        ("collections", collections, sims::collections::router),
    ];
    for (name, addr, make) in all {
        if let Some(addr) = addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} for {name}"))?;
            println!("{name} simulator on http://{}", listener.local_addr()?);
            sims::serve(listener, make()).await?;
        }
    }
    shutdown_signal().await;
    Ok(())
}
