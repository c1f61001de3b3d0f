//! A vendor's answer reduced for storage: the estimates about the person (age, gender and the
//! like) and the boxes of faces other than the one scored are dropped, wherever in the body the
//! vendor puts them; status, score, warnings, ids and the scored face's box stay for audit. A
//! body that is not JSON (an HTML error page) carries no such fields and is kept as it came.

use serde_json::Value;

/// Keys whose values are estimates about the person, dropped at any depth (case-insensitive).
const PERSONAL_KEYS: [&str; 10] = [
    "age",
    "age_range",
    "age_estimation",
    "estimated_age",
    "gender",
    "gender_estimation",
    "sex",
    "ethnicity",
    "race",
    "emotion",
];

/// Keys that make an object a detected face.
const BOX_KEYS: [&str; 6] = [
    "bbox",
    "bounding_box",
    "box",
    "face_box",
    "rectangle",
    "top_left",
];

pub fn redact(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(mut v) => {
            reduce(&mut v);
            serde_json::to_string(&v).unwrap_or_default()
        }
        Err(_) => body.to_owned(),
    }
}

fn reduce(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !PERSONAL_KEYS.iter().any(|p| k.eq_ignore_ascii_case(p)));
            for item in map.values_mut() {
                reduce(item);
            }
        }
        Value::Array(items) => {
            if items.len() > 1 && items.iter().all(is_face) {
                // Only the face livegate scores (the largest, as every adapter picks it).
                let keep = items
                    .iter()
                    .enumerate()
                    .max_by(|(_, a), (_, b)| area(a).total_cmp(&area(b)))
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                let kept = items.swap_remove(keep);
                items.clear();
                items.push(kept);
            }
            for item in items.iter_mut() {
                reduce(item);
            }
        }
        _ => {}
    }
}

fn is_face(v: &Value) -> bool {
    v.as_object().is_some_and(|m| {
        m.keys()
            .any(|k| BOX_KEYS.iter().any(|b| k.eq_ignore_ascii_case(b)))
    })
}

fn num(v: Option<&Value>) -> f64 {
    v.and_then(Value::as_f64).unwrap_or(0.0)
}

/// A face's box area in any of the vendors' shapes: `[x1, y1, x2, y2]`, `{x, y, width,
/// height}`, or Kairos' `top_left` with `delta`; 0 when it cannot tell.
fn area(face: &Value) -> f64 {
    let Some(m) = face.as_object() else {
        return 0.0;
    };
    if let Some(delta) = m.get("delta") {
        return (num(delta.get("x")) * num(delta.get("y"))).abs();
    }
    for key in BOX_KEYS {
        match m.get(key) {
            Some(Value::Array(b)) if b.len() == 4 => {
                let c: Vec<f64> = b.iter().map(|x| x.as_f64().unwrap_or(0.0)).collect();
                return ((c[2] - c[0]) * (c[3] - c[1])).abs();
            }
            Some(o @ Value::Object(_)) => {
                return (num(o.get("width")) * num(o.get("height"))).abs();
            }
            _ => {}
        }
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn estimates_and_other_faces_go_the_verdict_and_the_scored_face_stay() {
        let body = json!({
            "request_id": "r-1",
            "liveness": {
                "status": "Approved", "score": 97.5,
                "warnings": [{"risk": "LOW_FACE_QUALITY"}],
                "user_image": {"entities": [
                    {"bbox": [0, 0, 10, 10], "confidence": 0.5, "age": 31.2, "gender": "female"},
                    {"bbox": [0, 0, 100, 100], "confidence": 0.9, "Age": 44.0, "Gender": "male"}
                ]}
            }
        });
        let out: Value = serde_json::from_str(&redact(&body.to_string())).expect("json");
        assert_eq!(
            out,
            json!({
                "request_id": "r-1",
                "liveness": {
                    "status": "Approved", "score": 97.5,
                    "warnings": [{"risk": "LOW_FACE_QUALITY"}],
                    "user_image": {"entities": [{"bbox": [0, 0, 100, 100], "confidence": 0.9}]}
                }
            })
        );
    }

    #[test]
    fn kairos_shaped_boxes_and_non_json_bodies() {
        let body = json!({"predictions": [
            {"top_left": {"x": 0, "y": 0}, "delta": {"x": 5, "y": 5}, "gender": {"type": "F"}},
            {"top_left": {"x": 0, "y": 0}, "delta": {"x": 50, "y": 40}, "age": 20}
        ]});
        let out: Value = serde_json::from_str(&redact(&body.to_string())).expect("json");
        assert_eq!(
            out,
            json!({"predictions": [{"top_left": {"x": 0, "y": 0}, "delta": {"x": 50, "y": 40}}]})
        );
        assert_eq!(redact("<html>502</html>"), "<html>502</html>");
    }
}
