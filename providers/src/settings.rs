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

pub(crate) fn check_url(field: &'static str, url: &str, problems: &mut Vec<SettingProblem>) {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        problems.push(SettingProblem {
            field,
            message: format!("{url:?} is not an http(s) URL"),
        });
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
    field: &'static str,
    secret: &Secret,
) -> Vec<SettingProblem> {
    let mut p = Vec::new();
    check_url("base_url", base_url, &mut p);
    check_secret(field, secret, &mut p);
    p
}
