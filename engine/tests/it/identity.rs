//! Face embeddings on real photos: alignment template, agreement with a numpy + onnxruntime
//! rendering of the same pipeline, and same/different-person decisions at the calibrated
//! thresholds.
//!
//! Photos: the models directory's samples, and `engine/tests/data/` (NASA's public-domain
//! portrait of Eileen Collins as shipped in scikit-image, and a derived second photo; see
//! `engine/tests/data/LICENSES.md`).

use image::RgbImage;
use livegate_engine::search::{FaceIndex, IndexOptions};
use livegate_engine::{
    EMBEDDING_DIM, Engine, MATCH_THRESHOLD, POSSIBLE_SAME_PERSON_THRESHOLD, cosine,
};
use uuid::Uuid;

use crate::common::{engine, models_dir, sample};

fn data(name: &str) -> RgbImage {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    Engine::decode(&std::fs::read(&path).unwrap()).unwrap()
}

fn embedding(img: &RgbImage) -> Vec<f32> {
    let (analysis, e) = engine().analyze_and_embed(img).unwrap();
    assert!(analysis.face_count >= 1);
    let v = e.unwrap().vector;
    assert_eq!(v.len(), EMBEDDING_DIM);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    v
}

#[test]
fn template_matches_the_models_directory() {
    let text = std::fs::read_to_string(models_dir().join("face_embedding_alignment_template.json"))
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let points = json["template_150px_reye_leye_nose_mouth"]
        .as_array()
        .unwrap();
    let compiled = livegate_engine::alignment_template();
    assert_eq!(points.len(), compiled.len());
    for (p, c) in points.iter().zip(compiled) {
        assert!((p[0].as_f64().unwrap() - c[0]).abs() < 1e-9);
        assert!((p[1].as_f64().unwrap() - c[1]).abs() < 1e-9);
    }
}

/// Cosines printed by a numpy + onnxruntime rendering of the pipeline (reference_pipeline.py
/// detection, scikit-image `SimilarityTransform` + bilinear `warp` with a black border,
/// onnxruntime 1.x on the same ONNX file).
const REFERENCE_COSINES: &[(&str, &str, f32)] = &[
    ("real.jpg", "spoof_print.jpg", 0.94962),
    ("real.jpg", "spoof_replay.jpg", 0.97457),
    ("real.jpg", "astronaut.jpg", 0.83101),
    ("spoof_print.jpg", "astronaut.jpg", 0.81366),
    ("spoof_replay.jpg", "astronaut_variant.jpg", 0.84504),
    ("astronaut.jpg", "astronaut_variant.jpg", 0.98861),
];

fn photo(name: &str) -> RgbImage {
    if name.starts_with("astronaut") || name.starts_with("hopper") {
        data(name)
    } else {
        sample(name)
    }
}

#[test]
fn cosines_match_the_reference_rendering() {
    for (a, b, want) in REFERENCE_COSINES {
        let got = cosine(&embedding(&photo(a)), &embedding(&photo(b)));
        assert!(
            (got - want).abs() < 0.01,
            "{a} vs {b}: {got} (reference {want})"
        );
    }
}

#[test]
fn same_person_in_two_photos_verifies() {
    let a = embedding(&data("astronaut.jpg"));
    let b = embedding(&data("astronaut_variant.jpg"));
    let s = cosine(&a, &b);
    assert!(s >= MATCH_THRESHOLD, "astronaut pair {s}");
    let s = cosine(
        &embedding(&data("hopper.jpg")),
        &embedding(&data("hopper_variant.jpg")),
    );
    assert!(s >= MATCH_THRESHOLD, "hopper pair {s}");

    // The sample selfie against a mirrored, downscaled copy of itself.
    let real = sample("real.jpg");
    let mirrored = image::imageops::flip_horizontal(&real);
    let (w, h) = mirrored.dimensions();
    let small = image::imageops::resize(&mirrored, w * 3 / 4, h * 3 / 4, image::imageops::Triangle);
    let s = cosine(&embedding(&real), &embedding(&small));
    assert!(s >= MATCH_THRESHOLD, "real.jpg vs its mirrored copy {s}");
}

#[test]
fn different_people_do_not_verify() {
    let astronaut = embedding(&data("astronaut.jpg"));
    let hopper = embedding(&data("hopper.jpg"));
    for other in ["real.jpg", "spoof_print.jpg", "spoof_replay.jpg"] {
        let other_face = embedding(&sample(other));
        for (name, face) in [("astronaut", &astronaut), ("hopper", &hopper)] {
            let s = cosine(face, &other_face);
            assert!(s < POSSIBLE_SAME_PERSON_THRESHOLD, "{name} vs {other}: {s}");
        }
    }
    // Two official portraits of two older women in uniform: the closest different-person
    // pair among the lawful photos, still under the review band.
    for (a, b) in [
        ("astronaut.jpg", "hopper.jpg"),
        ("astronaut_variant.jpg", "hopper_variant.jpg"),
        ("astronaut.jpg", "hopper_variant.jpg"),
    ] {
        let s = cosine(&embedding(&data(a)), &embedding(&data(b)));
        assert!(s < POSSIBLE_SAME_PERSON_THRESHOLD, "{a} vs {b}: {s}");
    }
}

#[test]
fn identify_returns_the_enrolled_person_first() {
    let enrolled = [
        "real.jpg",
        "spoof_print.jpg",
        "spoof_replay.jpg",
        "astronaut.jpg",
        "hopper.jpg",
    ];
    let faces: Vec<(Uuid, Vec<f32>)> = enrolled
        .iter()
        .enumerate()
        .map(|(i, name)| (Uuid::from_u128(i as u128 + 1), embedding(&photo(name))))
        .collect();
    let index = FaceIndex::build(EMBEDDING_DIM, IndexOptions::default(), faces);
    for (probe, enrolled_as) in [("astronaut_variant.jpg", 4), ("hopper_variant.jpg", 5)] {
        let probe = embedding(&data(probe));
        let hits = index.search(&probe, 5, -1.0);
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].id, Uuid::from_u128(enrolled_as), "{hits:?}");
        assert!(hits[0].similarity >= MATCH_THRESHOLD);
        assert!(hits[1].similarity < MATCH_THRESHOLD, "{hits:?}");
        // At the match threshold only the enrolled person is returned.
        let matched = index.search(&probe, 10, MATCH_THRESHOLD);
        assert_eq!(matched.len(), 1);
    }
}
