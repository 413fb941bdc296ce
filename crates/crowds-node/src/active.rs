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

use crate::body::{Body, BoxError};
use bytes::Bytes;
use crowds_proto::html::ActiveFilter;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

/// The policy added to rewritten pages.
pub const CSP: &str = "script-src 'none'; object-src 'none'; worker-src 'none'";

/// Rewrites an HTML page response without active content; others pass unchanged.
pub fn strip(resp: Response<Body>) -> Response<Body> {
    if !crate::body::is_plain_html(resp.headers()) || resp.status() == StatusCode::NOT_MODIFIED {
        return resp;
    }
    let (mut parts, mut page) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(16);
    tokio::spawn(async move {
        let mut filter = ActiveFilter::new();
        loop {
            let filtered = match page.frame().await {
                Some(Ok(frame)) => {
                    let Ok(bytes) = frame.into_data() else {
                        continue;
                    };
                    filter.write(&bytes)
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                None => break,
            };
            match filtered {
                Ok(chunk) if chunk.is_empty() => {}
                Ok(chunk) => {
                    if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // A page we cannot rewrite safely is not delivered half-filtered.
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
        match filter.end() {
            Ok(rest) if !rest.is_empty() => {
                let _ = tx.send(Ok(Frame::data(Bytes::from(rest)))).await;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
            }
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
