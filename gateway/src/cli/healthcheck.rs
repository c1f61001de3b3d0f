//! `livegate healthcheck`: asks a running gateway's `/healthz` and exits 0 only on 200, so a
//! container image needs no curl for its `HEALTHCHECK` (or a Kubernetes `exec` probe).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};

/// Where to knock: the address `serve` listens on, with a wildcard host replaced by loopback
/// (a server bound to 0.0.0.0 answers there, and a probe must not leave the container).
pub fn target(listen: SocketAddr, path: &str) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    format!("http://{}{path}", SocketAddr::new(ip, listen.port()))
}

pub async fn check(listen: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let url = target(listen, path);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    println!("{url}: {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::target;

    #[test]
    fn a_wildcard_listen_address_is_probed_on_loopback() {
        assert_eq!(
            target("0.0.0.0:8080".parse().unwrap(), "/healthz"),
            "http://127.0.0.1:8080/healthz"
        );
        assert_eq!(
            target("[::]:9000".parse().unwrap(), "readyz"),
            "http://[::1]:9000/readyz"
        );
        assert_eq!(
            target("10.1.2.3:8080".parse().unwrap(), "/healthz"),
            "http://10.1.2.3:8080/healthz"
        );
    }
}
