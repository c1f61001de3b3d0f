//! Synthetic images built from the samples.

use std::io::Cursor;

use image::{ImageFormat, Rgb, RgbImage};
use livegate_engine::{Engine, EngineOptions, Warning};

use crate::common::{engine, sample, sample_bytes};

#[test]
fn blank_image_has_no_face() {
    let img = RgbImage::from_pixel(640, 480, Rgb([128, 128, 128]));
    let a = engine().analyze(&img).unwrap();
    assert_eq!(a.score, None);
    assert_eq!(a.face_count, 0);
    assert!(a.faces.is_empty());
    assert_eq!(a.scored_face, None);
    assert_eq!(a.detector, None);
    assert_eq!(a.quality, None);
    assert_eq!(a.luminance, None);
    assert_eq!(a.warnings, vec![Warning::NoFaceDetected]);
}

#[test]
fn two_faces_side_by_side() {
    let real = sample("real.jpg");
    let (w, h) = real.dimensions();
    let mut img = RgbImage::new(w * 2, h);
    image::imageops::replace(&mut img, &real, 0, 0);
    image::imageops::replace(&mut img, &real, i64::from(w), 0);
    let a = engine().analyze(&img).unwrap();
    eprintln!("{a:?}");
    assert_eq!(a.face_count, 2, "{a:?}");
    assert!(a.has_warning(Warning::MultipleFacesDetected));
    let mut lefts: Vec<f32> = a.faces.iter().map(|f| f.bbox[0]).collect();
    lefts.sort_by(f32::total_cmp);
    assert!(lefts[0] < w as f32 && lefts[1] >= w as f32, "{lefts:?}");
    assert!(a.scored_face.is_some());
    assert!(a.score.unwrap() >= 0.5, "{a:?}");
}

#[test]
fn dark_face_is_low_luminance() {
    let mut img = sample("real.jpg");
    for p in img.pixels_mut() {
        p.0 = p.0.map(|v| (f32::from(v) * 0.2) as u8);
    }
    let a = engine().analyze(&img).unwrap();
    eprintln!("{a:?}");
    assert_eq!(a.face_count, 1, "{a:?}");
    assert!(a.luminance.unwrap() < EngineOptions::default().min_face_luminance);
    assert!(a.has_warning(Warning::LowFaceLuminance), "{:?}", a.warnings);
    assert!(!a.has_warning(Warning::HighFaceLuminance));
}

#[test]
fn bright_face_is_high_luminance() {
    let mut img = sample("real.jpg");
    for p in img.pixels_mut() {
        p.0 = p.0.map(|v| 255 - ((255.0 - f32::from(v)) * 0.2) as u8);
    }
    let a = engine().analyze(&img).unwrap();
    eprintln!("{a:?}");
    assert_eq!(a.face_count, 1, "{a:?}");
    assert!(
        a.has_warning(Warning::HighFaceLuminance),
        "{:?}",
        a.warnings
    );
}

#[test]
fn blurred_face_is_low_quality() {
    let sharp = engine().analyze(&sample("real.jpg")).unwrap();
    let img = image::imageops::blur(&sample("real.jpg"), 6.0);
    let a = engine().analyze(&img).unwrap();
    eprintln!("{a:?}");
    assert_eq!(a.face_count, 1, "{a:?}");
    assert!(a.quality.unwrap() < sharp.quality.unwrap());
    assert!(a.has_warning(Warning::LowFaceQuality), "{:?}", a.warnings);
}

#[test]
fn small_face_is_low_quality() {
    // The real sample scaled down to 120x160: the face box is about 48 pixels.
    let img = image::imageops::resize(
        &sample("real.jpg"),
        120,
        160,
        image::imageops::FilterType::Triangle,
    );
    let a = engine().analyze(&img).unwrap();
    eprintln!("{a:?}");
    if a.face_count == 1 {
        assert!(a.has_warning(Warning::LowFaceQuality), "{:?}", a.warnings);
    }
}

#[test]
fn attack_threshold_comes_from_the_options() {
    let strict = engine()
        .with_options(EngineOptions {
            attack_threshold: 0.999,
            ..EngineOptions::default()
        })
        .unwrap();
    let a = strict.analyze(&sample("real.jpg")).unwrap();
    assert!(a.has_warning(Warning::LivenessFaceAttack));
    let lenient = engine()
        .with_options(EngineOptions {
            attack_threshold: 0.0,
            ..EngineOptions::default()
        })
        .unwrap();
    let a = lenient.analyze(&sample("spoof_print.jpg")).unwrap();
    assert!(!a.has_warning(Warning::LivenessFaceAttack));
    assert_eq!(a.spoof_type, None);
    assert!(
        engine()
            .with_options(EngineOptions {
                nms_iou: 2.0,
                ..EngineOptions::default()
            })
            .is_err()
    );
}

#[test]
fn all_formats_give_the_same_analysis() {
    let img = sample("real.jpg");
    let from_jpeg = engine().analyze_bytes(&sample_bytes("real.jpg")).unwrap();
    for format in [ImageFormat::Png, ImageFormat::WebP, ImageFormat::Tiff] {
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
        let a = engine().analyze_bytes(&bytes).unwrap();
        // Lossless re-encodings of the decoded pixels: identical results.
        assert_eq!(a, from_jpeg, "{format:?}");
    }
}

#[test]
fn pixel_cap_applies_to_analyze_bytes() {
    let capped = engine()
        .with_options(EngineOptions {
            max_pixels: 1000,
            ..EngineOptions::default()
        })
        .unwrap();
    let err = capped.analyze_bytes(&sample_bytes("real.jpg")).unwrap_err();
    assert!(err.is_input_error(), "{err}");
    assert!(matches!(Engine::decode(b"\xff\xd8\xff\xe0 broken"), Err(e) if e.is_input_error()));
}
