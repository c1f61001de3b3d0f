//! What leaves livegate for a vendor: the selfie without its personal metadata (GPS, device,
//! XMP, comments), its orientation kept, the pixels untouched; Didit told not to keep it.

use std::sync::{Arc, Mutex};

use livegate::config::KeyHash;

use crate::harness::{Backend, Harness, SimUrls, jpeg, spawn_sim};

const KEY: &str = "lg_test_privacy_key_7070";

/// `jpeg` carrying, after SOI: EXIF (orientation 6, a GPS position and a camera serial), XMP
/// and a comment; every one of them holds the word `SECRET`.
fn selfie_with_metadata(jpeg: &[u8]) -> Vec<u8> {
    let segment = |marker: u8, payload: &[u8]| {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(
            &u16::try_from(payload.len() + 2)
                .expect("small")
                .to_be_bytes(),
        );
        s.extend_from_slice(payload);
        s
    };
    let mut exif = b"Exif\0\0II*\0\x08\0\0\0".to_vec();
    exif.extend_from_slice(&1u16.to_le_bytes());
    exif.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    exif.extend_from_slice(&3u16.to_le_bytes());
    exif.extend_from_slice(&1u32.to_le_bytes());
    exif.extend_from_slice(&[6, 0, 0, 0]); // a quarter turn
    exif.extend_from_slice(&0u32.to_le_bytes());
    exif.extend_from_slice(b"GPS 52.5200N 13.4050E SECRET; BodySerialNumber SECRET-123");
    let mut out = jpeg[..2].to_vec();
    out.extend(segment(0xE1, &exif));
    out.extend(segment(
        0xE1,
        b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>SECRET</x:xmpmeta>",
    ));
    out.extend(segment(0xFE, b"shot by SECRET"));
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_gets_the_selfie_without_its_metadata_and_upright() {
    // The Didit simulator, behind a layer that keeps every request body as it arrived.
    let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let keep = bodies.clone();
    let didit = livegate_simulators::didit::router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let keep = keep.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
                keep.lock().expect("bodies").push(bytes.to_vec());
                next.run(axum::extract::Request::from_parts(
                    parts,
                    axum::body::Body::from(bytes),
                ))
                .await
            }
        },
    ));
    let didit = spawn_sim(didit).await;
    let h = Harness::start_with(Backend::Sqlite, move |_: &SimUrls| {
        format!(
            r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "k", timeout_ms: 5000 }}
tenants:
  t:
    keys: ["{key}"]
    routing: {{ strategy: single, providers: [didit] }}
"#,
            key = KeyHash::of_key(KEY)
        )
    })
    .await
    .expect("harness");

    let plain = jpeg(70);
    let selfie = selfie_with_metadata(&plain);
    let (w, h_px) = image::load_from_memory(&plain)
        .expect("decode")
        .to_rgb8()
        .dimensions();
    let r = h.liveness(KEY, "image", selfie.clone(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let bodies = bodies.lock().expect("bodies").clone();
    assert_eq!(bodies.len(), 1);
    let body = &bodies[0];
    assert!(
        find(body, b"SECRET").is_none(),
        "metadata reached the vendor"
    );
    assert!(
        find(body, b"name=\"save_api_request\"\r\n\r\nfalse").is_some(),
        "Didit was not told to keep nothing"
    );

    // The image inside the multipart: upright as the caller's, the same pixels.
    let start = find(body, b"\xFF\xD8\xFF").expect("a JPEG in the body");
    let end = body
        .windows(2)
        .rposition(|w| w == b"\xFF\xD9")
        .expect("EOI")
        + 2;
    let sent = &body[start..end];
    let mut decoder = image::ImageReader::new(std::io::Cursor::new(sent))
        .with_guessed_format()
        .expect("format")
        .into_decoder()
        .expect("decoder");
    use image::ImageDecoder;
    assert_eq!(
        decoder.orientation().expect("orientation"),
        image::metadata::Orientation::Rotate90
    );
    assert_eq!(decoder.dimensions(), (w, h_px));
    assert_eq!(
        image::load_from_memory(sent).expect("decode").to_rgb8(),
        image::load_from_memory(&plain).expect("decode").to_rgb8()
    );

    // Stored as the caller sent it: its own hash, its turned size.
    let (row, _) = h.last_row("t").await;
    assert_eq!(
        (row.image_width, row.image_height),
        (Some(h_px as i32), Some(w as i32))
    );
    assert_eq!(
        row.image_sha256.as_deref(),
        Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&selfie)).as_str())
    );
}

/// A Didit answer's body is stored without the age and gender it estimated, unless the tenant
/// asks for the full body (`store_raw: full`) or for none (`store_raw: none`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_bodies_are_stored_redacted_unless_the_tenant_says_otherwise() {
    const FULL: &str = "lg_test_privacy_full_7071";
    const NONE: &str = "lg_test_privacy_none_7072";
    let h = Harness::start_with(Backend::Sqlite, |u: &SimUrls| {
        format!(
            r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "k", timeout_ms: 5000 }}
tenants:
  redacted:
    keys: ["{k1}"]
    routing: {{ strategy: single, providers: [didit] }}
  full:
    keys: ["{k2}"]
    routing: {{ strategy: single, providers: [didit] }}
    store_raw: full
  none:
    keys: ["{k3}"]
    routing: {{ strategy: single, providers: [didit] }}
    store_raw: none
"#,
            didit = u.didit,
            k1 = KeyHash::of_key(KEY),
            k2 = KeyHash::of_key(FULL),
            k3 = KeyHash::of_key(NONE),
        )
    })
    .await
    .expect("harness");
    let mut bodies = std::collections::BTreeMap::new();
    for (key, tenant) in [(KEY, "redacted"), (FULL, "full"), (NONE, "none")] {
        let r = h.liveness(key, "image", jpeg(71), &[]).await;
        assert_eq!(r.status, 200, "{tenant}: {}", r.body);
        let (_, attempts) = h.last_row(tenant).await;
        bodies.insert(tenant, attempts[0].raw_body.clone());
    }
    let full = bodies["full"].clone().expect("full body stored");
    assert!(
        full.contains("\"age\"") && full.contains("\"gender\""),
        "{full}"
    );
    let redacted = bodies["redacted"].clone().expect("redacted body stored");
    assert!(
        !redacted.contains("\"age\"") && !redacted.contains("\"gender\""),
        "{redacted}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&redacted).expect("json");
    assert!(parsed["liveness"]["status"].is_string(), "{parsed}");
    assert!(parsed["liveness"]["score"].is_number(), "{parsed}");
    assert_eq!(bodies["none"], None);
}
