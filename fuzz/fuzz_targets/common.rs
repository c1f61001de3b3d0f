//! What the answer targets share: how their input splits into a status and a body, and what a
//! normalized answer must hold.

/// The first two bytes pick a status from 100 to 599; the rest is the body, as text.
pub fn status_and_body(data: &[u8]) -> (u16, String) {
    let (head, body) = data.split_at(data.len().min(2));
    let raw = head.iter().fold(0u16, |acc, b| {
        acc.wrapping_mul(256).wrapping_add(u16::from(*b))
    });
    (100 + raw % 500, String::from_utf8_lossy(body).into_owned())
}

pub fn sane(a: &livegate_providers::ProviderAnswer) {
    if let Some(s) = a.score {
        assert!((0.0..=1.0).contains(&s), "score {s}");
    }
    if a.faces_detected == 0 {
        assert!(a.face.is_none(), "a face without a face detected");
    }
}
