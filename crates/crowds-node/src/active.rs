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
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The policy added to rewritten pages.
pub const CSP: &str = "script-src 'none'; object-src 'none'; worker-src 'none'";

type Output = Arc<Mutex<Vec<u8>>>;
type Sink = Box<dyn FnMut(&[u8]) + Send>;
type Rewriter = lol_html::send::HtmlRewriter<'static, Sink>;

fn rewriter(out: Output) -> Rewriter {
    let remove = lol_html::element!(
        "script, object, embed, applet",
        |el: &mut lol_html::send::Element<'_, '_>| {
            el.remove();
            Ok(())
        }
    );
    let noscript = lol_html::element!("noscript", |el: &mut lol_html::send::Element<'_, '_>| {
        el.remove_and_keep_content();
        Ok(())
    });
    let attributes = lol_html::element!("*", |el: &mut lol_html::send::Element<'_, '_>| {
        let doomed: Vec<String> = el
            .attributes()
            .iter()
            .filter(|a| {
                let name = a.name();
                let value = a.value().trim_start().to_ascii_lowercase();
                name.starts_with("on")
                    || value.starts_with("javascript:")
                    || value.starts_with("vbscript:")
            })
            .map(|a| a.name())
            .collect();
        for name in doomed {
            el.remove_attribute(&name);
        }
        Ok(())
    });
    let sink: Sink = Box::new(move |chunk: &[u8]| {
        out.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(chunk);
    });
    lol_html::send::HtmlRewriter::new(
        lol_html::send::Settings {
            element_content_handlers: vec![remove, noscript, attributes],
            memory_settings: lol_html::MemorySettings {
                max_allowed_memory_usage: 4 * 1024 * 1024,
                ..lol_html::MemorySettings::new()
            },
            ..lol_html::send::Settings::new_send()
        },
        sink,
    )
}

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
        let out: Output = Arc::default();
        let mut rw = Some(rewriter(out.clone()));
        let take = |out: &Output| {
            Bytes::from(std::mem::take(
                &mut *out.lock().unwrap_or_else(|p| p.into_inner()),
            ))
        };
        loop {
            match page.frame().await {
                Some(Ok(frame)) => {
                    let Ok(bytes) = frame.into_data() else {
                        continue;
                    };
                    let written = rw.as_mut().map(|r| r.write(&bytes));
                    if !matches!(written, Some(Ok(()))) {
                        // A page we cannot rewrite safely is not delivered half-filtered.
                        let _ = tx.send(Err("the page could not be filtered".into())).await;
                        return;
                    }
                    let chunk = take(&out);
                    if !chunk.is_empty() && tx.send(Ok(Frame::data(chunk))).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                None => break,
            }
        }
        if let Some(r) = rw.take() {
            if r.end().is_err() {
                let _ = tx.send(Err("the page could not be filtered".into())).await;
                return;
            }
        }
        let rest = take(&out);
        if !rest.is_empty() {
            let _ = tx.send(Ok(Frame::data(rest))).await;
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
