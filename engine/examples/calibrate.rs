//! Measures same-person and different-person similarity distributions, and the false match
//! rate (FMR) and false non-match rate (FNMR) at a range of thresholds.
//!
//! ```text
//! cargo run --example calibrate -- [--augment] IDENTITY=IMAGE,IMAGE... ...
//! ```
//!
//! Each argument names one identity and its photos. `--augment` adds three derived views of
//! every photo (mirrored; downscaled to 60%; darkened to 70% brightness): more same-person
//! pairs of the kind a re-submitted selfie produces, but no new identities. Models from
//! `LIVEGATE_MODELS_DIR`, else `./models` or the user cache, as `livegate serve` looks them up.

use std::path::PathBuf;

use image::RgbImage;
use livegate_engine::{Engine, cosine};

fn views(img: RgbImage, augment: bool) -> Vec<(String, RgbImage)> {
    let mut out = vec![("original".to_owned(), img.clone())];
    if augment {
        out.push(("mirrored".into(), image::imageops::flip_horizontal(&img)));
        let (w, h) = img.dimensions();
        out.push((
            "downscaled".into(),
            image::imageops::resize(&img, w * 3 / 5, h * 3 / 5, image::imageops::Triangle),
        ));
        let mut dark = img;
        for p in dark.pixels_mut() {
            for c in p.0.iter_mut() {
                *c = (f32::from(*c) * 0.7) as u8;
            }
        }
        out.push(("darkened".into(), dark));
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut augment = false;
    let mut identities: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for arg in std::env::args().skip(1) {
        if arg == "--augment" {
            augment = true;
            continue;
        }
        let (name, files) = arg
            .split_once('=')
            .ok_or_else(|| format!("expected IDENTITY=IMAGE,IMAGE..., got {arg:?}"))?;
        identities.push((
            name.to_owned(),
            files.split(',').map(PathBuf::from).collect(),
        ));
    }
    if identities.is_empty() {
        return Err("name at least one IDENTITY=IMAGE,... (see the file's doc comment)".into());
    }
    let dir = livegate_engine::default_models_dir();
    let engine = Engine::load(&dir)?;

    // (identity, label, embedding)
    let mut faces: Vec<(usize, String, Vec<f32>)> = Vec::new();
    for (i, (name, files)) in identities.iter().enumerate() {
        for file in files {
            let img = Engine::decode(&std::fs::read(file)?)?;
            for (view, v) in views(img, augment) {
                let label = format!("{name}:{}:{view}", file.display());
                match engine.analyze_and_embed(&v)?.1 {
                    Some(e) => faces.push((i, label, e.vector)),
                    None => eprintln!("no face: {label}"),
                }
            }
        }
    }
    let (mut same, mut diff) = (Vec::new(), Vec::new());
    for (a, fa) in faces.iter().enumerate() {
        for fb in &faces[a + 1..] {
            let s = cosine(&fa.2, &fb.2);
            if fa.0 == fb.0 {
                same.push(s);
            } else {
                diff.push(s);
            }
        }
    }
    let stats = |v: &mut Vec<f32>| {
        v.sort_by(f32::total_cmp);
        let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
        (
            v.first().copied().unwrap_or(f32::NAN),
            mean,
            v.last().copied().unwrap_or(f32::NAN),
        )
    };
    let (smin, smean, smax) = stats(&mut same);
    let (dmin, dmean, dmax) = stats(&mut diff);
    println!(
        "{} faces from {} identities{}",
        faces.len(),
        identities.len(),
        if augment { " (with derived views)" } else { "" }
    );
    println!(
        "same-person pairs: {} (min {smin:.4}, mean {smean:.4}, max {smax:.4})",
        same.len()
    );
    println!(
        "different-person pairs: {} (min {dmin:.4}, mean {dmean:.4}, max {dmax:.4})",
        diff.len()
    );
    println!("| threshold | FMR | FNMR |");
    println!("|---|---|---|");
    for t in [0.88f32, 0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97] {
        let fm = diff.iter().filter(|&&s| s >= t).count();
        let fnm = same.iter().filter(|&&s| s < t).count();
        println!(
            "| {t:.2} | {fm}/{} = {:.3} | {fnm}/{} = {:.3} |",
            diff.len(),
            fm as f64 / diff.len().max(1) as f64,
            same.len(),
            fnm as f64 / same.len().max(1) as f64
        );
    }
    Ok(())
}
