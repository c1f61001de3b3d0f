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
