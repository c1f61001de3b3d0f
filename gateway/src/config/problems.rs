//! A config problem with its YAML path, and typed deserialization that reports one.

use std::fmt;

use serde_yaml_ng::Value;

/// One problem in a config file, located by its YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

pub fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

pub fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => prefix.to_owned(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

/// Deserialize one subtree, reporting a failure with the full path of the offending field.
pub fn typed<T: serde::de::DeserializeOwned>(
    v: Value,
    prefix: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.path().to_string();
            let inner = if inner == "." { String::new() } else { inner };
            let msg = e.into_inner().to_string();
            // serde_yaml_ng appends its own location, meaningless after interpolation.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            problems.push(problem(join(prefix, &inner), msg));
            None
        }
    }
}
