//! A recording upstream for the adapters' unit tests: answers every request with one canned
//! response and hands over what it received.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use tokio::sync::mpsc;

use crate::{CheckRequest, ImageFormat, ImageInput};

pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub fields: Vec<Field>,
}

impl Seen {
    /// The trace context came along, the form's fields are `names` in order, and the first is
    /// the request's image, unchanged, as `file` of type `ctype`.
    pub fn assert_image_form(&self, req: &CheckRequest, names: &[&str], file: &str, ctype: &str) {
        assert_eq!(
            self.headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok()),
            req.traceparent.as_deref()
        );
        let got: Vec<_> = self.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(got, names);
        let image = &self.fields[0];
        assert_eq!(image.file.as_deref(), Some(file));
        assert_eq!(image.ctype.as_deref(), Some(ctype));
        assert_eq!(image.bytes.as_slice(), &req.image.bytes[..]);
    }
}

pub struct Field {
    pub name: String,
    pub file: Option<String>,
    pub ctype: Option<String>,
    pub bytes: Vec<u8>,
}

struct Upstream {
    status: StatusCode,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
    seen: mpsc::UnboundedSender<Seen>,
}

async fn record(
    State(up): State<Arc<Upstream>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> impl IntoResponse {
    let mut fields = Vec::new();
    while let Some(field) = multipart.next_field().await.expect("multipart") {
        let name = field.name().unwrap_or_default().to_owned();
        let file = field.file_name().map(str::to_owned);
        let ctype = field.content_type().map(str::to_owned);
        let bytes = field.bytes().await.expect("field").to_vec();
        fields.push(Field {
            name,
            file,
            ctype,
            bytes,
        });
    }
    let path = uri.path().to_owned();
    up.seen
        .send(Seen {
            path,
            headers,
            fields,
        })
        .expect("send");
    let mut out = HeaderMap::new();
    for (k, v) in &up.headers {
        out.insert(*k, v.parse().expect("header"));
    }
    (up.status, out, up.body.clone())
}

/// A server on loopback answering `status`, `headers` and `body`; its base URL and what it saw.
pub async fn upstream(
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: impl Into<String>,
) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let up = Arc::new(Upstream {
        status: StatusCode::from_u16(status).expect("status"),
        headers,
        body: body.into(),
        seen: tx,
    });
    let app = axum::Router::new().fallback(record).with_state(up);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), rx)
}

/// A flat `width`x`height` image in `format`, with a trace context.
pub fn request(format: ImageFormat, width: u32, height: u32, threshold: f64) -> CheckRequest {
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        width,
        height,
        image::Rgb([120, 90, 60]),
    ));
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format.codec()).expect("encode");
    CheckRequest {
        image: ImageInput {
            bytes: buf.into_inner().into(),
            format,
            width,
            height,
            decoded: Some(Arc::new(img)),
        },
        threshold,
        request_id: "req-1".into(),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    }
}
