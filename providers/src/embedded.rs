//! The built-in engine, in process. Inference is CPU-bound: it runs on the blocking pool, at
//! most one call per core at a time, behind a bounded queue — when the queue is full the call
//! fails at once as `Overloaded` (a 503) instead of piling up memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use livegate_engine::{Analysis, Engine};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::settings::SettingProblem;
use crate::{
    Capabilities, CheckRequest, ErrorKind, Face, ImageFormat, Profile, Provider, ProviderAnswer,
    ProviderError, RawExchange, SpoofType, Warning, WarningCode,
};

/// Settings of one built-in engine provider entry (`kind: embedded`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the models are; the gateway decides the default.
    #[serde(default)]
    pub models_dir: Option<PathBuf>,
    /// Checks allowed to wait for a worker; one more is refused (default 64).
    #[serde(default)]
    pub max_queue: Option<usize>,
    /// Inferences running at once (default: the number of cores).
    #[serde(default)]
    pub workers: Option<usize>,
}

impl Settings {
    /// What is wrong with settings that parsed, by field.
    pub fn problems(&self) -> Vec<SettingProblem> {
        match self.workers {
            Some(0) => vec![SettingProblem {
                field: "workers",
                message: "must be at least 1".to_owned(),
            }],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct Embedded {
    workers: usize,
    max_queue: usize,
    engine: Engine,
    running: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
    profile: Profile,
}

impl Embedded {
    pub fn new(name: impl Into<String>, settings: &Settings, engine: Engine) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = settings.workers.unwrap_or(cores).max(1);
        Self {
            workers,
            max_queue: settings.max_queue.unwrap_or(64),
            running: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(AtomicUsize::new(0)),
            engine,
            profile: Profile {
                name: name.into(),
                kind: "embedded",
                capabilities: Capabilities {
                    formats: ImageFormat::ALL.to_vec(),
                    min_side: 1,
                    max_side: 20_000,
                    // In process: the gateway's own intake cap is the only byte limit.
                    max_bytes: usize::MAX,
                },
            },
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Releases an admission slot however the call ends.
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl Provider for Embedded {
    fn profile(&self) -> &Profile {
        &self.profile
    }

    async fn check(&self, req: &CheckRequest) -> Result<ProviderAnswer, ProviderError> {
        let limit = self.workers.saturating_add(self.max_queue);
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= limit {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(ProviderError::new(
                ErrorKind::Overloaded,
                format!("the built-in engine is busy ({limit} checks in progress or queued)"),
            ));
        }
        let _admission = Admission(self.admitted.clone());
        let _permit = self.running.clone().acquire_owned().await.map_err(|_| {
            ProviderError::new(ErrorKind::Unavailable, "the engine is shutting down")
        })?;
        let engine = self.engine.clone();
        let Some(image) = req.image.decoded.clone() else {
            return Err(ProviderError::new(
                ErrorKind::Unavailable,
                "the built-in engine was handed an image that was not decoded",
            ));
        };
        // Decoded images are 8-bit RGB already: no copy on the way in.
        let analysis = tokio::task::spawn_blocking(move || match image.as_rgb8() {
            Some(rgb) => engine.analyze(rgb),
            None => engine.analyze(&image.to_rgb8()),
        })
        .await
        .map_err(|e| {
            ProviderError::new(ErrorKind::Unavailable, format!("engine task failed: {e}"))
        })?
        .map_err(|e| {
            ProviderError::new(
                ErrorKind::BadInput,
                format!("the engine could not analyze the image: {e}"),
            )
        })?;
        Ok(answer(&analysis))
    }
}

fn answer(a: &Analysis) -> ProviderAnswer {
    let face = a.face().map(|f| Face {
        bbox: f.bbox.map(f64::from),
        confidence: Some(f64::from(f.confidence)),
        quality: a.quality.map(f64::from),
        luminance: a.luminance.map(f64::from),
        age: None,
        gender: None,
    });
    ProviderAnswer {
        score: a.score.map(f64::from),
        upstream_decision: None,
        spoof_type: a.spoof_type.map(|_| SpoofType::Unknown),
        face,
        faces_detected: u32::try_from(a.face_count).unwrap_or(u32::MAX),
        warnings: a
            .warnings
            .iter()
            .map(|w| Warning::new(WarningCode::from(w.code())))
            .collect(),
        provider_request_id: None,
        // The analysis itself is the "raw answer" kept on the attempt row.
        raw: RawExchange {
            status: None,
            body: serde_json::to_string(a).ok(),
        },
    }
}
