//! What the adapters' `Settings` share: a problem found in one of them, and the checks that
//! several of them make.

use crate::Secret;

/// One problem in a provider entry's settings, named by its field so that the config reader
/// can give its full YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    pub field: &'static str,
    pub message: String,
}

/// An `https` URL; plain `http` only to a loopback host (a simulator, a sidecar) or where the
/// entry sets `allow_insecure_http: true`, since the credential and the selfie go with it.
pub(crate) fn check_url(
    field: &'static str,
    url: &str,
    allow_insecure_http: bool,
    problems: &mut Vec<SettingProblem>,
) {
    let mut refuse = |message: String| problems.push(SettingProblem { field, message });
    let parsed = match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => return refuse(format!("{url:?} is not an http(s) URL")),
    };
    if parsed.scheme() == "http" && !allow_insecure_http && !is_loopback(&parsed) {
        refuse(format!(
            "{url:?} is plain http to a host that is not loopback: the credential and the \
             selfie would cross the network in clear; use https, or set \
             allow_insecure_http: true"
        ));
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => false,
    }
}

pub(crate) fn check_secret(field: &'static str, s: &Secret, problems: &mut Vec<SettingProblem>) {
    if s.expose().trim().is_empty() {
        problems.push(SettingProblem {
            field,
            message: "must not be empty".to_owned(),
        });
    }
}

/// The problems of an entry that names an upstream by `base_url` and one credential.
pub(crate) fn url_and_secret(
    base_url: &str,
    allow_insecure_http: bool,
    field: &'static str,
    secret: &Secret,
) -> Vec<SettingProblem> {
    let mut p = Vec::new();
    check_url("base_url", base_url, allow_insecure_http, &mut p);
    check_secret(field, secret, &mut p);
    p
}
