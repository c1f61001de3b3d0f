use std::path::PathBuf;
use std::sync::OnceLock;

use image::RgbImage;
use livegate_engine::Engine;

/// The models directory: `LIVEGATE_MODELS_DIR`, else the project's copy beside the checkout.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("LIVEGATE_MODELS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models"),
    }
}

/// One engine shared by every test of the binary (loading optimizes four models).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = models_dir();
        Engine::load(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot load the models from {} (set LIVEGATE_MODELS_DIR): {e}",
                dir.display()
            )
        })
    })
}

pub fn sample_bytes(name: &str) -> Vec<u8> {
    let path = models_dir().join("samples").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn sample(name: &str) -> RgbImage {
    Engine::decode(&sample_bytes(name)).unwrap()
}

/// A fresh, empty scratch directory under the system temp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "livegate-engine-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
