//! Checksum verification of the models directory.

use std::path::Path;

use livegate_engine::{Engine, EngineError, MODEL_FILES, verify_models};

use crate::common::{models_dir, scratch_dir};

/// A copy of the models directory made of symlinks to the shared files.
fn linked_copy(name: &str) -> std::path::PathBuf {
    let dir = scratch_dir(name);
    let src = models_dir();
    for file in MODEL_FILES.iter().chain(&["SHA256SUMS"]) {
        std::os::unix::fs::symlink(src.join(file).canonicalize().unwrap(), dir.join(file)).unwrap();
    }
    dir
}

fn expected_hash(file: &str) -> String {
    let sums = std::fs::read_to_string(models_dir().join("SHA256SUMS")).unwrap();
    sums.lines()
        .find(|l| l.ends_with(file))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string()
}

#[test]
fn shared_models_verify() {
    verify_models(&models_dir()).unwrap();
    assert_eq!(MODEL_FILES.len(), 5);
}

#[test]
fn corrupted_model_is_rejected() {
    let dir = linked_copy("corrupt");
    let victim = "MiniFASNetV2.onnx";
    let mut bytes = std::fs::read(dir.join(victim)).unwrap();
    std::fs::remove_file(dir.join(victim)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(dir.join(victim), &bytes).unwrap();

    let err = verify_models(&dir).unwrap_err();
    let msg = err.to_string();
    match &err {
        EngineError::ChecksumMismatch {
            file,
            expected,
            actual,
            ..
        } => {
            assert_eq!(*file, victim);
            assert_eq!(*expected, expected_hash(victim));
            assert_ne!(actual, expected);
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        msg.contains(victim) && msg.contains(&expected_hash(victim)),
        "{msg}"
    );
    let load_err = Engine::load(&dir).unwrap_err();
    assert!(matches!(load_err, EngineError::ChecksumMismatch { file, .. } if file == victim));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_model_is_rejected() {
    let dir = linked_copy("missing");
    let victim = "face_detection_back_256.onnx";
    std::fs::remove_file(dir.join(victim)).unwrap();
    let err = Engine::load(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, EngineError::ModelMissing { file, .. } if *file == victim),
        "{err:?}"
    );
    assert!(
        msg.contains(victim) && msg.contains(&expected_hash(victim)),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_checksum_entry_or_list_is_rejected() {
    let dir = linked_copy("sums");
    std::fs::remove_file(dir.join("SHA256SUMS")).unwrap();
    assert!(matches!(
        verify_models(&dir),
        Err(EngineError::ChecksumsUnreadable { .. })
    ));
    let sums = std::fs::read_to_string(models_dir().join("SHA256SUMS")).unwrap();
    let without: String = sums
        .lines()
        .filter(|l| !l.ends_with("MiniFASNetV1SE.onnx"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("SHA256SUMS"), without).unwrap();
    let err = verify_models(&dir).unwrap_err();
    assert!(
        matches!(&err, EngineError::ChecksumMissing { file, .. } if *file == "MiniFASNetV1SE.onnx"),
        "{err:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(verify_models(Path::new("/nonexistent/livegate-models")).is_err());
}
