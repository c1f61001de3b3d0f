/// `openapi.yaml` is generated; this fails when the checked-in file is not what the code says.
/// Regenerate with `cargo run -p livegate -- openapi > openapi.yaml`.
#[test]
fn checked_in_openapi_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml");
    let on_disk = std::fs::read_to_string(path).expect("openapi.yaml at the repository root");
    let generated = livegate::http::openapi::yaml();
    assert!(
        on_disk == generated,
        "openapi.yaml is stale: run `cargo run -p livegate -- openapi > openapi.yaml`"
    );
}

/// Every route the router registers (`.route("PATH", get(..).post(..))` under `src/http/`)
/// is an operation of the document, and every operation is routed: a handler added without
/// its `#[utoipa::path]` (or a path listed without a route) fails here.
#[test]
fn every_route_is_documented_and_every_operation_routed() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut files = vec![src.join("mod.rs")];
    for e in std::fs::read_dir(src.join("handlers"))
        .expect("handlers")
        .flatten()
    {
        files.push(e.path());
    }
    let mut routed = std::collections::BTreeSet::new();
    for f in files {
        let text: String = std::fs::read_to_string(&f)
            .expect("readable")
            .split_whitespace()
            .collect();
        for (at, _) in text.match_indices(".route(\"") {
            let rest = &text[at + ".route(\"".len()..];
            let Some(end) = rest.find('"') else { continue };
            let path = &rest[..end];
            // The method chain runs to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let args = &rest[end..];
            let close = args
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(args.len(), |(i, _)| i);
            for method in ["get", "post", "put", "patch", "delete"] {
                let call = format!("{method}(");
                let first = args[..close].starts_with(&format!("\",{call}"));
                let chained = args[..close].contains(&format!(".{call}"));
                if first || chained {
                    routed.insert((path.to_owned(), method.to_owned()));
                }
            }
        }
    }
    // The document itself is served, not described.
    routed.remove(&("/openapi.yaml".to_owned(), "get".to_owned()));
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&livegate::http::openapi::yaml()).expect("yaml");
    let mut documented = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_mapping().expect("paths") {
        for (method, _) in ops.as_mapping().expect("operations") {
            documented.insert((
                path.as_str().expect("path").to_owned(),
                method.as_str().expect("method").to_owned(),
            ));
        }
    }
    assert!(
        routed.len() >= 12,
        "the route scan found too little: {routed:?}"
    );
    assert_eq!(
        routed, documented,
        "routes (left) and documented operations (right) differ"
    );
}

/// The README lists every error `code` between its `error-codes` markers, exactly as the one
/// table in `error.rs` has them; and the document's `Problem.code` enumerates them too.
#[test]
fn readme_and_openapi_list_every_error_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let (start, end) = ("<!-- error-codes:start -->\n", "<!-- error-codes:end -->");
    let from = readme
        .find(start)
        .expect("README has <!-- error-codes:start -->")
        + start.len();
    let to = readme[from..]
        .find(end)
        .expect("README has <!-- error-codes:end -->")
        + from;
    let expected = livegate::error::ErrorCode::markdown_table();
    assert!(
        readme[from..to] == expected,
        "README's error-code table is stale; put this between the markers:\n{expected}"
    );
    let doc: serde_json::Value =
        serde_yaml_ng::from_str(&livegate::http::openapi::yaml()).expect("openapi yaml");
    let listed: Vec<&str> = doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_array()
        .expect("Problem.code has an enum")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let all: Vec<&str> = livegate::error::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(listed, all);
}
