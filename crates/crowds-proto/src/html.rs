//! HTML, read as it streams: the embedded objects of a page (for the timing defence)
//! and the removal of active content. Pure parsing with lol_html, no I/O.
//!
//! [`Scanner`] finds the objects a browser will fetch right after a page (images and
//! srcsets, stylesheets, icons, scripts, media posters), resolved against the page's URL
//! and normalised so that the exit's announcements match the browser's requests.
//! [`ActiveFilter`] removes `<script>`, `<object>`, `<embed>`, `<applet>`, event-handler
//! attributes and `javascript:`/`vbscript:` URLs, keeping `<noscript>` content. Both
//! bound the parser's memory, and both are fed untrusted bytes (fuzzed).

use std::sync::{Arc, Mutex};

/// Most objects found in one page.
pub const MAX_OBJECTS: usize = 48;
/// Memory the HTML parser may use per page.
pub const MAX_PARSER_MEMORY: usize = 4 * 1024 * 1024;

/// The URL form used on both sides, so announcements and requests match: absolute
/// `http://`, default port dropped, no fragment. `None` for anything else.
pub fn normalize(url: &str) -> Option<String> {
    let mut u = url::Url::parse(url).ok()?;
    if u.scheme() != "http" || u.host().is_none() {
        return None;
    }
    u.set_fragment(None);
    Some(u.to_string())
}

/// A parser that only reads: its output is discarded.
type Rewriter = lol_html::send::HtmlRewriter<'static, fn(&[u8])>;

/// Collects embedded object URLs while a page streams through.
pub struct Scanner {
    rewriter: Option<Rewriter>,
    found: Arc<Mutex<Vec<String>>>,
    base: url::Url,
    seen: std::collections::HashSet<String>,
}

impl Scanner {
    /// A scanner for a page at `base` (an absolute URL); `None` if it is not one.
    pub fn new(base: &str) -> Option<Self> {
        let base = url::Url::parse(base).ok()?;
        let found: Arc<Mutex<Vec<String>>> = Arc::default();
        let f = found.clone();
        let handler = lol_html::element!(
            "img, script[src], link[href], video[poster], input[src], source[srcset]",
            move |el: &mut lol_html::send::Element<'_, '_>| {
                let mut urls = Vec::new();
                match el.tag_name().as_str() {
                    "link" => {
                        let rel = el
                            .get_attribute("rel")
                            .unwrap_or_default()
                            .to_ascii_lowercase();
                        if rel
                            .split_whitespace()
                            .any(|r| r == "stylesheet" || r == "icon")
                        {
                            urls.extend(el.get_attribute("href"));
                        }
                    }
                    "video" => urls.extend(el.get_attribute("poster")),
                    _ => urls.extend(el.get_attribute("src")),
                }
                if let Some(srcset) = el.get_attribute("srcset") {
                    urls.extend(
                        srcset
                            .split(',')
                            .filter_map(|c| c.split_whitespace().next().map(str::to_string)),
                    );
                }
                f.lock().unwrap_or_else(|p| p.into_inner()).extend(urls);
                Ok(())
            }
        );
        let sink: fn(&[u8]) = |_| {};
        let rewriter = lol_html::send::HtmlRewriter::new(
            lol_html::send::Settings {
                element_content_handlers: vec![handler],
                memory_settings: lol_html::MemorySettings {
                    max_allowed_memory_usage: MAX_PARSER_MEMORY,
                    ..lol_html::MemorySettings::new()
                },
                ..lol_html::send::Settings::new_send()
            },
            sink,
        );
        Some(Self {
            rewriter: Some(rewriter),
            found,
            base,
            seen: Default::default(),
        })
    }

    /// Feeds page bytes; returns newly found object URLs (absolute, normalised, http).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        if let Some(r) = self.rewriter.as_mut() {
            if r.write(bytes).is_err() {
                // Unparseable page: stop scanning, keep streaming it.
                self.rewriter = None;
            }
        }
        self.take()
    }

    /// Ends the page; returns URLs found in its last bytes.
    pub fn finish(&mut self) -> Vec<String> {
        if let Some(r) = self.rewriter.take() {
            let _ = r.end();
        }
        self.take()
    }

    fn take(&mut self) -> Vec<String> {
        let raw: Vec<String> =
            std::mem::take(&mut *self.found.lock().unwrap_or_else(|p| p.into_inner()));
        let mut out = Vec::new();
        for r in raw {
            if self.seen.len() >= MAX_OBJECTS {
                break;
            }
            let Ok(abs) = self.base.join(r.trim()) else {
                continue;
            };
            let Some(n) = normalize(abs.as_str()) else {
                continue;
            };
            if n.len() <= crate::bundle::MAX_URL && self.seen.insert(n.clone()) {
                out.push(n);
            }
        }
        out
    }
}

/// Why a page could not be filtered (it is then not delivered at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the page could not be filtered: {0}")]
pub struct FilterError(String);

type Output = Arc<Mutex<Vec<u8>>>;
type Sink = Box<dyn FnMut(&[u8]) + Send>;
type ActiveRewriter = lol_html::send::HtmlRewriter<'static, Sink>;

fn active_rewriter(out: Output) -> ActiveRewriter {
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
                max_allowed_memory_usage: MAX_PARSER_MEMORY,
                ..lol_html::MemorySettings::new()
            },
            ..lol_html::send::Settings::new_send()
        },
        sink,
    )
}

/// Removes active content from a page as it streams.
pub struct ActiveFilter {
    rewriter: Option<ActiveRewriter>,
    out: Output,
}

impl Default for ActiveFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl ActiveFilter {
    /// A filter for one page.
    pub fn new() -> Self {
        let out: Output = Arc::default();
        Self {
            rewriter: Some(active_rewriter(out.clone())),
            out,
        }
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.out.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Feeds page bytes; returns the filtered bytes ready so far.
    pub fn write(&mut self, bytes: &[u8]) -> Result<Vec<u8>, FilterError> {
        let r = self
            .rewriter
            .as_mut()
            .ok_or_else(|| FilterError("already ended".into()))?;
        r.write(bytes).map_err(|e| FilterError(e.to_string()))?;
        Ok(self.take())
    }

    /// Ends the page; returns the last filtered bytes.
    pub fn end(&mut self) -> Result<Vec<u8>, FilterError> {
        let r = self
            .rewriter
            .take()
            .ok_or_else(|| FilterError("already ended".into()))?;
        r.end().map_err(|e| FilterError(e.to_string()))?;
        Ok(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_finds_embedded_objects_once() {
        let mut s = Scanner::new("http://site.example/dir/page.html").expect("base");
        let mut found = s.feed(b"<html><head><link rel=stylesheet href=/s.css><link rel=alternate href=/feed>\
            <link rel=\"shortcut icon\" href=fav.ico><script src=app.js></script></head><body><img src=a.png>");
        found.extend(s.feed(
            b"<img srcset=\"b.png 1x, c.png 2x\"><img src=a.png><video poster=p.jpg></video>\
            <img src=https://other.example/x.png><a href=/not-embedded>x</a></body></html>",
        ));
        found.extend(s.finish());
        assert_eq!(
            found,
            [
                "http://site.example/s.css",
                "http://site.example/dir/fav.ico",
                "http://site.example/dir/app.js",
                "http://site.example/dir/a.png",
                "http://site.example/dir/b.png",
                "http://site.example/dir/c.png",
                "http://site.example/dir/p.jpg",
            ]
        );
        assert!(Scanner::new("not a url").is_none());
    }

    #[test]
    fn normalisation_matches_browser_forms() {
        assert_eq!(
            normalize("http://a.example:80/x#frag"),
            Some("http://a.example/x".into())
        );
        assert_eq!(normalize("https://a.example/x"), None);
        assert_eq!(normalize("not a url"), None);
    }

    #[test]
    fn active_content_is_removed_across_chunks() {
        let page = "<html><body onload=\"steal()\"><script>alert(1)</script><p>text</p>\
                    <noscript><b>no js</b></noscript><a href=\"javascript:go()\">x</a>\
                    <object data=x.swf></object><embed src=y><img src=ok.png onerror=z()></body></html>";
        let mut f = ActiveFilter::new();
        let mut out = Vec::new();
        for chunk in page.as_bytes().chunks(7) {
            out.extend(f.write(chunk).expect("write"));
        }
        out.extend(f.end().expect("end"));
        let text = String::from_utf8_lossy(&out);
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
        assert!(f.write(b"x").is_err(), "ended filters refuse input");
    }
}
