//! Optional removal of active content from plain-HTTP pages (the article's third risk:
//! scripts and plug-ins can bypass the proxy or report the user's address).
//!
//! Owns the page rewriting done by the initiator's jondo when the user asked for it:
//! `<script>`, `<object>`, `<embed>` and `<applet>` elements are removed, `<noscript>`
//! content is kept, `on*` event attributes and `javascript:` URLs are dropped, and a
//! `Content-Security-Policy` forbidding scripts and plug-ins is added as a second line of
//! defence. The page is rewritten as it streams (lol_html); its length changes, so
//! `Content-Length` is removed. HTTPS pages cannot be rewritten (the jondo cannot read
//! them); the browser's own settings must cover those.
//!
//! It fails closed: pages (`text/html` and `application/xhtml+xml`) compressed with
//! gzip, deflate or br are decoded and filtered (and delivered uncompressed); a page in
//! any other encoding, or one that does not decode or parse, is not delivered.

use crate::body::{self, Body, BoxError};
use bytes::Bytes;
use crowds_proto::html::ActiveFilter;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

/// The policy added to rewritten pages.
pub const CSP: &str = "script-src 'none'; object-src 'none'; worker-src 'none'";

/// Input fed to a decoder at once: bounds what one compressed chunk can expand to.
const DECODE_SLICE: usize = 4 * 1024;

/// Whether a response is a page a browser would run scripts in.
fn is_page(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|t| t.trim_start().to_ascii_lowercase())
        .is_some_and(|t| t.starts_with("text/html") || t.starts_with("application/xhtml+xml"))
}

/// A page's content coding, undone as it streams.
enum Decoding {
    Identity,
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Vec<u8>>>),
}

impl Decoding {
    /// The decoder for a `Content-Encoding`; `None` for codings it cannot undo (and
    /// for more than one coding).
    fn for_headers(headers: &http::HeaderMap) -> Option<Self> {
        let mut codings = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty() && c != "identity");
        let first = codings.next();
        if codings.next().is_some() {
            return None;
        }
        Some(match first.as_deref() {
            None => Decoding::Identity,
            Some("gzip") | Some("x-gzip") => {
                Decoding::Gzip(flate2::write::GzDecoder::new(Vec::new()))
            }
            Some("deflate") => Decoding::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
            Some("br") => Decoding::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                Vec::new(),
                DECODE_SLICE,
            ))),
            Some(_) => return None,
        })
    }

    /// Decodes a slice of at most [`DECODE_SLICE`] bytes; returns what it gave.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        use std::io::Write;
        Ok(match self {
            Decoding::Identity => bytes.to_vec(),
            Decoding::Gzip(d) => {
                d.write_all(bytes)?;
                std::mem::take(d.get_mut())
            }
            Decoding::Deflate(d) => {
                d.write_all(bytes)?;
                std::mem::take(d.get_mut())
            }
            Decoding::Brotli(d) => {
                d.write_all(bytes)?;
                std::mem::take(d.get_mut())
            }
        })
    }

    /// Ends the stream: the last bytes, or an error if it was cut short.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        use std::io::Write;
        match self {
            Decoding::Identity => Ok(Vec::new()),
            Decoding::Gzip(d) => d.finish(),
            Decoding::Deflate(d) => d.finish(),
            Decoding::Brotli(mut d) => {
                d.close()?;
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
        }
    }
}

/// Rewrites a page response without active content; others pass unchanged. A page that
/// cannot be decoded is replaced by an error: it is never delivered unfiltered.
pub fn strip(resp: Response<Body>) -> Response<Body> {
    if !is_page(resp.headers()) || resp.status() == StatusCode::NOT_MODIFIED {
        return resp;
    }
    let Some(mut decoding) = Decoding::for_headers(resp.headers()) else {
        return body::text(
            StatusCode::BAD_GATEWAY,
            "crowds: this page uses a compression the jondo cannot undo, so its scripts \
             could not be removed (active content removal is on); it was not delivered.",
        );
    };
    let (mut parts, mut page) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(16);
    tokio::spawn(async move {
        let mut filter = ActiveFilter::new();
        let outcome: Result<(), BoxError> = async {
            while let Some(frame) = page.frame().await {
                let Ok(bytes) = frame?.into_data() else {
                    continue;
                };
                for slice in bytes.chunks(DECODE_SLICE) {
                    let chunk = filter.write(&decoding.write(slice)?)?;
                    if !chunk.is_empty() {
                        tx.send(Ok(Frame::data(Bytes::from(chunk)))).await?;
                    }
                }
            }
            let mut rest = filter.write(&decoding.finish()?)?;
            rest.extend(filter.end()?);
            if !rest.is_empty() {
                tx.send(Ok(Frame::data(Bytes::from(rest)))).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            // A page we cannot rewrite safely is not delivered half-filtered.
            let _ = tx.send(Err(e)).await;
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    Response::from_parts(parts, StreamBody::new(stream).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scripts_and_handlers_are_removed() {
        let page = "<html><body onload=\"steal()\"><script>alert(1)</script><p>text</p>\
                    <noscript><b>no js</b></noscript><a href=\"javascript:go()\">x</a>\
                    <object data=x.swf></object><embed src=y><img src=ok.png onerror=z()></body></html>";
        let mut resp = Response::new(crate::body::full(page));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(page.len()));
        let out = strip(resp);
        assert_eq!(out.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(!out.headers().contains_key(header::CONTENT_LENGTH));
        let body = out.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&body);
        for banned in [
            "<script",
            "alert",
            "onload",
            "javascript:",
            "<object",
            "<embed",
            "onerror",
        ] {
            assert!(!text.contains(banned), "{banned} survived: {text}");
        }
        for kept in ["<p>text</p>", "<b>no js</b>", "<img src=ok.png>"] {
            assert!(text.contains(kept), "{kept} lost: {text}");
        }
    }

    fn page_response(body: Vec<u8>, content_type: &str, encoding: &str) -> Response<Body> {
        let mut resp = Response::new(crate::body::full(body));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("type"),
        );
        if !encoding.is_empty() {
            h.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_str(encoding).expect("coding"),
            );
        }
        resp
    }

    async fn text_of(resp: Response<Body>) -> Result<String, BoxError> {
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn compressed_pages_are_decoded_and_filtered() {
        use std::io::Write;
        let page = format!(
            "<html><body><script>alert(1)</script><p>kept</p>{}</body></html>",
            "<i>padding</i>".repeat(5000)
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(page.as_bytes()).expect("gzip");
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(page.as_bytes()).expect("deflate");
        let mut br = Vec::new();
        brotli::BrotliCompress(
            &mut page.as_bytes(),
            &mut br,
            &brotli::enc::BrotliEncoderParams::default(),
        )
        .expect("br");
        for (encoded, coding, kind) in [
            (gz.finish().expect("gzip"), "gzip", "text/html"),
            (
                zlib.finish().expect("deflate"),
                "deflate",
                "text/html; charset=utf-8",
            ),
            (br, "br", "application/xhtml+xml"),
            (page.clone().into_bytes(), "", "application/xhtml+xml"),
        ] {
            let out = strip(page_response(encoded, kind, coding));
            assert!(
                !out.headers().contains_key(header::CONTENT_ENCODING),
                "{coding}"
            );
            assert_eq!(
                out.headers()[header::CONTENT_SECURITY_POLICY],
                CSP,
                "{coding}"
            );
            let text = text_of(out).await.expect("filtered page");
            assert!(
                !text.contains("<script") && !text.contains("alert"),
                "{coding}"
            );
            assert!(
                text.contains("<p>kept</p>") && text.len() > 50_000,
                "{coding}"
            );
        }
    }

    #[tokio::test]
    async fn pages_that_cannot_be_decoded_are_not_delivered() {
        let page = b"<script>alert(1)</script>".to_vec();
        let out = strip(page_response(page.clone(), "text/html", "zstd"));
        assert_eq!(out.status(), StatusCode::BAD_GATEWAY);
        assert!(!text_of(out).await.expect("error page").contains("alert"));
        let out = strip(page_response(page.clone(), "text/html", "gzip, br"));
        assert_eq!(out.status(), StatusCode::BAD_GATEWAY);
        // Claims gzip, is not: an error for the client, never the raw bytes.
        let out = strip(page_response(page, "text/html", "gzip"));
        if let Ok(text) = text_of(out).await {
            assert!(!text.contains("alert"), "{text}");
        }
    }

    #[tokio::test]
    async fn other_content_is_untouched() {
        let mut resp = Response::new(crate::body::full("<script>x</script>"));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let body = strip(resp)
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"<script>x</script>");
    }
}
