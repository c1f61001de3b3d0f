//! Shared helpers: test images, a running simulator and its control API.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, RgbImage};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// An image whose pixels depend on `variant`, so that different variants hash differently.
pub fn image(width: u32, height: u32, variant: u8, format: ImageFormat) -> Vec<u8> {
    let pixels = RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x % 251) as u8 ^ variant,
            (y % 241) as u8,
            variant.wrapping_mul(31),
        ])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(pixels)
        .write_to(&mut out, format)
        .expect("encode test image");
    out.into_inner()
}

pub fn jpeg(variant: u8) -> Vec<u8> {
    image(640, 480, variant, ImageFormat::Jpeg)
}

pub fn png(width: u32, height: u32, variant: u8) -> Vec<u8> {
    image(width, height, variant, ImageFormat::Png)
}

/// A valid PNG padded with trailing bytes (ignored by decoders) past `size` bytes.
pub fn padded_png(size: usize) -> Vec<u8> {
    let mut bytes = png(640, 480, 7);
    bytes.resize(size, 0);
    bytes
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn file_part(bytes: Vec<u8>, filename: &str, mime: &str) -> Part {
    Part::bytes(bytes)
        .file_name(filename.to_owned())
        .mime_str(mime)
        .expect("mime")
}

/// A form with one JPEG-labelled file part named `field`.
pub fn form_with(field: &str, bytes: Vec<u8>) -> Form {
    Form::new().part(
        field.to_owned(),
        file_part(bytes, "selfie.jpg", "image/jpeg"),
    )
}

/// A simulator served on port 0.
pub struct Sim {
    pub base: String,
    pub client: reqwest::Client,
}

impl Sim {
    pub async fn start(router: axum::Router) -> Self {
        let addr = livegate_simulators::spawn(router).await.expect("spawn");
        Sim {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn rule(&self, rule: Value) -> u64 {
        let response = self
            .client
            .post(self.url("/_sim/rules"))
            .json(&rule)
            .send()
            .await
            .expect("post rule");
        let status = response.status();
        let body: Value = response.json().await.expect("rule answer");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_u64().expect("rule id")
    }

    /// Posts a rule that must be refused; returns the error text.
    pub async fn bad_rule(&self, raw: &str) -> String {
        let response = self
            .client
            .post(self.url("/_sim/rules"))
            .header("content-type", "application/json")
            .body(raw.to_owned())
            .send()
            .await
            .expect("post rule");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{raw}");
        let body: Value = response.json().await.expect("rule error");
        body["error"].as_str().expect("error text").to_owned()
    }

    pub async fn requests(&self) -> Vec<Value> {
        let response = self
            .client
            .get(self.url("/_sim/requests"))
            .send()
            .await
            .expect("get requests");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("requests")
    }

    pub async fn delete(&self, path: &str) {
        let response = self
            .client
            .delete(self.url(path))
            .send()
            .await
            .expect("delete");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
}

/// Status, headers and JSON body (Null when the body is not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

pub async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("send");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        text,
        json,
    }
}
