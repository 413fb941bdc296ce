//! HTML as the timing defence and active-content removal read it: untrusted pages from
//! any server, fed in chunks whose sizes come from the input.
//!
//! Checks that neither the scanner nor the filter panics, that every URL the scanner
//! announces is a normalised absolute `http://` URL within the limits, that the scanner
//! finds the same objects however the page is cut, and that the filter, given a whole
//! page at once or in pieces, produces the same output. The same bytes, read as a
//! stylesheet, go through the CSS reference scanner (`css_urls`, `stylesheet_urls`).
#![no_main]

use crowds_proto::bundle::MAX_URL;
use crowds_proto::css::css_urls;
use crowds_proto::html::stylesheet_urls;
use crowds_proto::html::{normalize, ActiveFilter, Scanner, MAX_OBJECTS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, page)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let found = scan(page, step);
    check(&found);
    assert_eq!(
        found,
        scan(page, page.len().max(1)),
        "scanning depends on how the page was cut"
    );

    let css = String::from_utf8_lossy(page);
    for url in css_urls(&css) {
        assert!(!url.is_empty());
        assert!(!url.to_ascii_lowercase().starts_with("data:"), "{url}");
    }
    let objects = stylesheet_urls(&css, "http://site.example/css/main.css");
    check(&objects);

    let whole = filter(page, page.len().max(1));
    let pieces = filter(page, step);
    assert_eq!(whole.is_ok(), pieces.is_ok());
    if let (Ok(a), Ok(b)) = (whole, pieces) {
        assert_eq!(a, b, "filtering depends on how the page was cut");
    }
});

fn scan(page: &[u8], step: usize) -> Vec<String> {
    let mut scanner = Scanner::new("http://site.example/dir/page.html").expect("base");
    let mut found = Vec::new();
    for chunk in page.chunks(step) {
        found.extend(scanner.feed(chunk));
    }
    found.extend(scanner.finish());
    found
}

/// At most MAX_OBJECTS distinct, normalised `http://` URLs of at most MAX_URL bytes.
fn check(found: &[String]) {
    assert!(found.len() <= MAX_OBJECTS);
    let distinct: std::collections::HashSet<&String> = found.iter().collect();
    assert_eq!(distinct.len(), found.len(), "duplicates: {found:?}");
    for url in found {
        assert!(url.len() <= MAX_URL);
        assert_eq!(
            normalize(url).as_deref(),
            Some(url.as_str()),
            "not normalised: {url}"
        );
    }
}

fn filter(page: &[u8], step: usize) -> Result<Vec<u8>, ()> {
    let mut f = ActiveFilter::new();
    let mut out = Vec::new();
    for chunk in page.chunks(step) {
        out.extend(f.write(chunk).map_err(|_| ())?);
    }
    out.extend(f.end().map_err(|_| ())?);
    Ok(out)
}
