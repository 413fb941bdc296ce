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

use bytes::Bytes;
use crowds_net::body::{self, Body, BoxError};
use crowds_proto::html::ActiveFilter;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

/// The policy added to rewritten pages.
pub const CSP: &str = "script-src 'none'; object-src 'none'; worker-src 'none'";

/// Input fed to a decoder at once.
const DECODE_SLICE: usize = 4 * 1024;
/// Most bytes one input slice may decode to (a ratio of 2,048): bounds the memory a
/// compression bomb can take (brotli reaches ratios of millions).
const MAX_SLICE_OUTPUT: usize = 8 * 1024 * 1024;

/// Whether a response is a page: any of its `Content-Type` values names HTML or XHTML
/// (browsers take the last of several; any one is enough to treat it as a page).
pub(crate) fn is_page(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .to_ascii_lowercase()
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .any(|t| {
            let t = t.trim();
            t.starts_with("text/html") || t.starts_with("application/xhtml+xml")
        })
}

/// A decoder's output, refusing to grow past [`MAX_SLICE_OUTPUT`] between two takes.
#[derive(Default)]
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + data.len() > MAX_SLICE_OUTPUT {
            return Err(std::io::Error::other(
                "the page expands too much when decompressed",
            ));
        }
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A page's content coding, undone as it streams.
enum Decoding {
    Identity,
    Gzip(flate2::write::GzDecoder<Capped>),
    Deflate(flate2::write::ZlibDecoder<Capped>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Capped>>),
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
                Decoding::Gzip(flate2::write::GzDecoder::new(Capped::default()))
            }
            Some("deflate") => {
                Decoding::Deflate(flate2::write::ZlibDecoder::new(Capped::default()))
            }
            Some("br") => Decoding::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                Capped::default(),
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
                std::mem::take(&mut d.get_mut().0)
            }
            Decoding::Deflate(d) => {
                d.write_all(bytes)?;
                std::mem::take(&mut d.get_mut().0)
            }
            Decoding::Brotli(d) => {
                d.write_all(bytes)?;
                std::mem::take(&mut d.get_mut().0)
            }
        })
    }

    /// Ends the stream: the last bytes, or an error if it was cut short.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        use std::io::Write;
        match self {
            Decoding::Identity => Ok(Vec::new()),
            Decoding::Gzip(d) => d.finish().map(|c| c.0),
            Decoding::Deflate(d) => d.finish().map(|c| c.0),
            Decoding::Brotli(mut d) => {
                d.close()?;
                d.flush()?;
                Ok(std::mem::take(&mut d.get_mut().0))
            }
        }
    }
}

type FrameResult = Result<Frame<Bytes>, BoxError>;

/// Runs `page` through `step` as it streams: each chunk of decoded bytes goes through
/// `step` (which may change or inspect it); `end` gives the last bytes. An error cuts the
/// body with that error, so the client never takes a half-processed page for a whole one.
fn transform<S, E>(mut page: Body, mut decoding: Decoding, mut step: S, end: E) -> Body
where
    S: FnMut(&[u8]) -> Result<Vec<u8>, BoxError> + Send + 'static,
    E: FnOnce() -> Result<Vec<u8>, BoxError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<FrameResult>(16);
    tokio::spawn(async move {
        let outcome: Result<(), BoxError> = async {
            while let Some(frame) = page.frame().await {
                let Ok(bytes) = frame?.into_data() else {
                    continue;
                };
                for slice in bytes.chunks(DECODE_SLICE) {
                    let chunk = step(&decoding.write(slice)?)?;
                    if !chunk.is_empty() {
                        tx.send(Ok(Frame::data(Bytes::from(chunk)))).await?;
                    }
                }
            }
            let mut rest = step(&decoding.finish()?)?;
            rest.extend(end()?);
            if !rest.is_empty() {
                tx.send(Ok(Frame::data(Bytes::from(rest)))).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            let _ = tx.send(Err(e)).await;
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    StreamBody::new(stream).boxed_unsync()
}

/// A response with its content coding undone (gzip, deflate, br), as it streams, with
/// `inspect` seeing every decoded chunk (`Some`) before it is passed on, and `None` at
/// the end. `None` when its coding is one this jondo cannot undo.
pub(crate) fn decode_inspecting<F>(resp: Response<Body>, inspect: F) -> Option<Response<Body>>
where
    F: FnMut(Option<&[u8]>) + Send + 'static,
{
    let decoding = Decoding::for_headers(resp.headers())?;
    let (mut parts, page) = resp.into_parts();
    if !matches!(decoding, Decoding::Identity) {
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_ENCODING);
    }
    let inspect = std::sync::Arc::new(std::sync::Mutex::new(inspect));
    let at_end = inspect.clone();
    let body = transform(
        page,
        decoding,
        move |bytes: &[u8]| {
            (inspect.lock().unwrap_or_else(|p| p.into_inner()))(Some(bytes));
            Ok(bytes.to_vec())
        },
        move || {
            (at_end.lock().unwrap_or_else(|p| p.into_inner()))(None);
            Ok(Vec::new())
        },
    );
    Some(Response::from_parts(parts, body))
}

fn lock_filter(f: &std::sync::Mutex<ActiveFilter>) -> std::sync::MutexGuard<'_, ActiveFilter> {
    f.lock().unwrap_or_else(|p| p.into_inner())
}

/// Rewrites a page response without active content. Every response gets the CSP and
/// `nosniff` (a document without a type, or an SVG or XML one, is then still held to
/// "no scripts"); pages (HTML, XHTML, also compressed) are filtered. A page that cannot be
/// decoded is replaced by an error: it is never delivered unfiltered.
pub fn strip(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !is_page(resp.headers()) || resp.status() == StatusCode::NOT_MODIFIED {
        return resp;
    }
    let Some(decoding) = Decoding::for_headers(resp.headers()) else {
        return body::text(
            StatusCode::BAD_GATEWAY,
            "crowds: this page uses a compression the jondo cannot undo, so its scripts \
             could not be removed (active content removal is on); it was not delivered.",
        );
    };
    let (mut parts, page) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    let filter = std::sync::Arc::new(std::sync::Mutex::new(ActiveFilter::new()));
    let last = filter.clone();
    let body = transform(
        page,
        decoding,
        move |bytes: &[u8]| Ok(lock_filter(&filter).write(bytes)?),
        move || Ok(lock_filter(&last).end()?),
    );
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scripts_and_handlers_are_removed() {
        let page = "<html><body onload=\"steal()\"><script>alert(1)</script><p>text</p>\
                    <noscript><b>no js</b></noscript><a href=\"javascript:go()\">x</a>\
                    <object data=x.swf></object><embed src=y><img src=ok.png onerror=z()></body></html>";
        let mut resp = Response::new(crowds_net::body::full(page));
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
        let mut resp = Response::new(crowds_net::body::full(body));
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
    async fn a_compression_bomb_is_cut_not_swallowed() {
        // 64 MiB of one byte, brotli-compressed to a few hundred bytes.
        let mut br = Vec::new();
        let huge = vec![b'a'; 64 * 1024 * 1024];
        brotli::BrotliCompress(
            &mut &huge[..],
            &mut br,
            &brotli::enc::BrotliEncoderParams::default(),
        )
        .expect("br");
        assert!(br.len() < 64 * 1024, "{}", br.len());
        let out = strip(page_response(br, "text/html", "br"));
        assert!(
            text_of(out).await.is_err(),
            "a page that expands past the limit must be cut with an error"
        );
    }

    #[tokio::test]
    async fn every_response_gets_the_policy_and_ambiguous_pages_are_filtered() {
        let mut resp = page_response(b"<script>x</script>".to_vec(), "text/plain", "");
        resp.headers_mut()
            .append(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let out = strip(resp);
        assert_eq!(out.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(!text_of(out).await.expect("page").contains("<script"));
        let out = strip(page_response(b"<svg/>".to_vec(), "image/svg+xml", ""));
        assert_eq!(out.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(out.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[tokio::test]
    async fn other_content_is_untouched() {
        let mut resp = Response::new(crowds_net::body::full("<script>x</script>"));
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
