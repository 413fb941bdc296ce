//! HTML as the timing defence and active-content removal read it: untrusted pages from
//! any server, fed in chunks whose sizes come from the input.
//!
//! Checks that neither the scanner nor the filter panics, that every URL the scanner
//! announces is a normalised absolute `http://` URL within the limits, and that the
//! filter, given a whole page at once or in pieces, produces the same output.
#![no_main]

use crowds_proto::bundle::MAX_URL;
use crowds_proto::html::{normalize, ActiveFilter, Scanner, MAX_OBJECTS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, page)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut scanner = Scanner::new("http://site.example/dir/page.html").expect("base");
    let mut found = Vec::new();
    for chunk in page.chunks(step) {
        found.extend(scanner.feed(chunk));
    }
    found.extend(scanner.finish());
    assert!(found.len() <= MAX_OBJECTS);
    for url in &found {
        assert!(url.len() <= MAX_URL);
        assert_eq!(
            normalize(url).as_deref(),
            Some(url.as_str()),
            "not normalised: {url}"
        );
    }

    let whole = filter(page, page.len().max(1));
    let pieces = filter(page, step);
    assert_eq!(whole.is_ok(), pieces.is_ok());
    if let (Ok(a), Ok(b)) = (whole, pieces) {
        assert_eq!(a, b, "filtering depends on how the page was cut");
    }
});

fn filter(page: &[u8], step: usize) -> Result<Vec<u8>, ()> {
    let mut f = ActiveFilter::new();
    let mut out = Vec::new();
    for chunk in page.chunks(step) {
        out.extend(f.write(chunk).map_err(|_| ())?);
    }
    out.extend(f.end().map_err(|_| ())?);
    Ok(out)
}
