//! HTML, read as it streams: the embedded objects of a page (for the timing defence)
//! and the removal of active content. Pure parsing with lol_html, no I/O.
//!
//! [`Scanner`] finds the objects a browser fetches for a page without running any
//! script, resolved against the document's base URL and normalised (see [`normalize`])
//! so that the exit's announcements match the browser's requests:
//!
//! - `<base href>`: the first `<base>` with an `href` sets the base for the URLs after
//!   it (as in browsers; an `href` that is not http(s) leaves the page's URL in force);
//! - `<img src srcset>`, `<picture><source srcset>`, `<input type=image src>`,
//!   `background` on `<body>`, `<table>`, `<td>`, `<th>`; srcsets parsed as the HTML
//!   standard says (a URL runs to whitespace and may hold commas, invalid candidates are
//!   dropped), every candidate announced since the browser's choice is not known;
//! - `<link href>` whose `rel` has `stylesheet`, `icon`, `apple-touch-icon(-precomposed)`,
//!   `preload` (and its `imagesrcset`), `modulepreload` or `manifest` (not `prefetch`:
//!   that is for a later page);
//! - `<script src>` of a classic or module script (not `nomodule`, not data blocks such
//!   as `type=text/template`);
//! - `<video poster src>`, `<audio src>`, their `<source src>`, `<track src>`,
//!   `<embed src>`, `<object data>`, and the documents of `<iframe src>`, `<frame src>`;
//! - CSS in `<style>` elements (the first [`MAX_STYLE_TEXT`] bytes of each) and in
//!   `style` attributes: `url(…)`, `@import`, `image-set(…)` (see [`crate::css`]).
//!
//! Only `http://` objects are announced: `https://` ones cannot be (jondos cannot fetch
//! inside TLS), nor can `data:`, `javascript:`, `blob:` or `about:` ones. At most
//! [`MAX_OBJECTS`] distinct objects per page.
//!
//! Not covered, so those requests still go through the crowd one by one after the page:
//! anything a script asks for (`fetch`, XHR, lazy-loading libraries that move `data-src`
//! into `src`, dynamically inserted elements, workers), what the page's stylesheets and
//! frames refer to in turn (CSS beyond the page's own `<style>` and `style`, one level;
//! the exit may scan fetched stylesheets with [`stylesheet_urls`]),
//! `<iframe srcdoc>`, SVG references (`<image href>`, `<use href>`), and what a browser
//! decides at run time (which srcset candidate, media queries, which `<video>` source).
//!
//! [`ActiveFilter`] removes `<script>`, `<object>`, `<embed>`, `<applet>`, event-handler
//! attributes and `javascript:`/`vbscript:` URLs, keeping `<noscript>` content. Both
//! bound the parser's memory, and both are fed untrusted bytes (fuzzed).

use crate::bundle::MAX_URL;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// Most objects found in one page. A median page makes about 70 requests; this leaves
/// room for heavy pages while bounding what one page makes the exit fetch.
pub const MAX_OBJECTS: usize = 256;
/// Memory the HTML parser may use per page.
pub const MAX_PARSER_MEMORY: usize = 4 * 1024 * 1024;
/// Most bytes of one `<style>` element's text that are scanned for references; the rest
/// of that element is ignored (it bounds the text held while the element streams).
pub const MAX_STYLE_TEXT: usize = 256 * 1024;

/// Link types whose target the browser fetches with the page (`prefetch` is not one:
/// it is fetched for a later navigation, if at all).
const EMBEDDED_RELS: [&str; 7] = [
    "stylesheet",
    "icon",
    "apple-touch-icon",
    "apple-touch-icon-precomposed",
    "preload",
    "modulepreload",
    "manifest",
];

/// The JavaScript MIME type essences of the HTML standard: a `<script>` of one of these
/// types (or none) is a classic script, fetched if it has a `src`.
const JAVASCRIPT_TYPES: [&str; 16] = [
    "application/ecmascript",
    "application/javascript",
    "application/x-ecmascript",
    "application/x-javascript",
    "text/ecmascript",
    "text/javascript",
    "text/javascript1.0",
    "text/javascript1.1",
    "text/javascript1.2",
    "text/javascript1.3",
    "text/javascript1.4",
    "text/javascript1.5",
    "text/jscript",
    "text/livescript",
    "text/x-ecmascript",
    "text/x-javascript",
];

/// Schemes that never lead to a fetch the exit could make for the browser.
const INERT_SCHEMES: [&str; 4] = ["data:", "javascript:", "blob:", "about:"];

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

/// A reference as written in a page or stylesheet, resolved against `base` into the
/// announced form: [`normalize`]d, at most [`MAX_URL`] bytes. `None` for empty
/// references, inert schemes and anything that is not `http://`.
pub(crate) fn resolve(base: &url::Url, raw: &str) -> Option<String> {
    let raw = trim_ascii_whitespace(raw);
    let bytes = raw.as_bytes();
    let inert = INERT_SCHEMES
        .iter()
        .any(|s| bytes.len() >= s.len() && bytes[..s.len()].eq_ignore_ascii_case(s.as_bytes()));
    if raw.is_empty() || inert {
        return None;
    }
    let url = normalize(base.join(raw).ok()?.as_str())?;
    (url.len() <= MAX_URL).then_some(url)
}

/// Strips the HTML standard's ASCII whitespace (space, tab, LF, FF, CR) from both ends.
fn trim_ascii_whitespace(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// An attribute's value as the browser sees it: lol_html hands values over as written,
/// with character references (`&amp;` in nearly every query string) left in.
fn attribute(el: &lol_html::send::Element<'_, '_>, name: &str) -> Option<String> {
    el.get_attribute(name).map(|v| decode_references(&v))
}

/// Named character references that map to ASCII or to Latin-1, which cover what URLs
/// and the attributes read here hold; the standard's other two thousand names are left
/// as written (the browser then asks for a URL that was not announced, and that request
/// goes through the crowd as it would without the defence). `true`: a legacy name,
/// decoded without its semicolon too.
const NAMED_REFERENCES: [(&str, char, bool); 47] = [
    ("amp", '&', true),
    ("AMP", '&', true),
    ("lt", '<', true),
    ("LT", '<', true),
    ("gt", '>', true),
    ("GT", '>', true),
    ("quot", '"', true),
    ("QUOT", '"', true),
    ("COPY", '\u{a9}', true),
    ("REG", '\u{ae}', true),
    ("Tab", '\t', false),
    ("NewLine", '\n', false),
    ("excl", '!', false),
    ("num", '#', false),
    ("dollar", '$', false),
    ("percnt", '%', false),
    ("apos", '\'', false),
    ("lpar", '(', false),
    ("rpar", ')', false),
    ("ast", '*', false),
    ("midast", '*', false),
    ("plus", '+', false),
    ("comma", ',', false),
    ("period", '.', false),
    ("sol", '/', false),
    ("colon", ':', false),
    ("semi", ';', false),
    ("equals", '=', false),
    ("quest", '?', false),
    ("commat", '@', false),
    ("lsqb", '[', false),
    ("lbrack", '[', false),
    ("bsol", '\\', false),
    ("rsqb", ']', false),
    ("rbrack", ']', false),
    ("Hat", '^', false),
    ("lowbar", '_', false),
    ("UnderBar", '_', false),
    ("grave", '`', false),
    ("DiacriticalGrave", '`', false),
    ("lcub", '{', false),
    ("lbrace", '{', false),
    ("verbar", '|', false),
    ("vert", '|', false),
    ("VerticalLine", '|', false),
    ("rcub", '}', false),
    ("rbrace", '}', false),
];

/// The legacy names of U+00A0 to U+00FF, in order (decoded without a semicolon too).
const LATIN1_REFERENCES: [&str; 96] = [
    "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf",
    "laquo", "not", "shy", "reg", "macr", "deg", "plusmn", "sup2", "sup3", "acute", "micro",
    "para", "middot", "cedil", "sup1", "ordm", "raquo", "frac14", "frac12", "frac34", "iquest",
    "Agrave", "Aacute", "Acirc", "Atilde", "Auml", "Aring", "AElig", "Ccedil", "Egrave", "Eacute",
    "Ecirc", "Euml", "Igrave", "Iacute", "Icirc", "Iuml", "ETH", "Ntilde", "Ograve", "Oacute",
    "Ocirc", "Otilde", "Ouml", "times", "Oslash", "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute",
    "THORN", "szlig", "agrave", "aacute", "acirc", "atilde", "auml", "aring", "aelig", "ccedil",
    "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc", "iuml", "eth", "ntilde",
    "ograve", "oacute", "ocirc", "otilde", "ouml", "divide", "oslash", "ugrave", "uacute", "ucirc",
    "uuml", "yacute", "thorn", "yuml",
];

/// What `&#128;` to `&#159;` stand for (windows-1252), as the HTML standard maps them.
const C1_REFERENCES: [u32; 32] = [
    0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
];

/// A named reference: its character, and whether it may go without a semicolon.
fn named_reference(name: &str) -> Option<(char, bool)> {
    if let Some(&(_, c, legacy)) = NAMED_REFERENCES.iter().find(|(n, _, _)| *n == name) {
        return Some((c, legacy));
    }
    let i = LATIN1_REFERENCES.iter().position(|n| *n == name)?;
    let c = char::from_u32(0xA0 + u32::try_from(i).ok()?)?;
    Some((c, true))
}

/// Decodes the character references of an attribute value as the HTML standard's
/// tokenizer does in attributes: numeric ones always (`&#38;`, `&#x26;`, semicolon or
/// not), named ones from [`NAMED_REFERENCES`] and [`LATIN1_REFERENCES`] with their
/// semicolon, legacy ones also without it unless an `=` or a letter follows (so
/// `?a=1&copy=2` keeps its `&copy`).
fn decode_references(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp + 1..];
        if let Some(num) = rest.strip_prefix('#') {
            let (hex, digits) = match num.strip_prefix(['x', 'X']) {
                Some(d) => (true, d),
                None => (false, num),
            };
            let len = digits
                .bytes()
                .take_while(|b| {
                    if hex {
                        b.is_ascii_hexdigit()
                    } else {
                        b.is_ascii_digit()
                    }
                })
                .count();
            if len == 0 {
                out.push('&');
                continue;
            }
            let radix = if hex { 16 } else { 10 };
            let value = digits[..len].chars().fold(0u32, |v, d| {
                v.saturating_mul(radix)
                    .saturating_add(d.to_digit(radix).unwrap_or(0))
                    .min(0x11_0000)
            });
            let value = match value {
                0x80..=0x9F => C1_REFERENCES[(value - 0x80) as usize],
                v => v,
            };
            out.push(
                char::from_u32(value)
                    .filter(|&c| c != '\0')
                    .unwrap_or('\u{fffd}'),
            );
            rest = &digits[len..];
            rest = rest.strip_prefix(';').unwrap_or(rest);
            continue;
        }
        let len = rest.bytes().take_while(u8::is_ascii_alphanumeric).count();
        let name = &rest[..len];
        let after = &rest[len..];
        match named_reference(name) {
            Some((c, _)) if after.starts_with(';') => {
                out.push(c);
                rest = &after[1..];
            }
            Some((c, true)) if !after.starts_with('=') => {
                out.push(c);
                rest = after;
            }
            _ => out.push('&'),
        }
    }
    out.push_str(rest);
    out
}

/// The URLs of a `srcset` (or `imagesrcset`) attribute, as the HTML standard's "parse a
/// srcset attribute" splits it: candidates are separated by commas, but a URL runs up
/// to whitespace and may contain commas itself (trailing commas end it). Candidates
/// with invalid descriptors (`a.png 1x 2x`, `b.png 10q`) are dropped as browsers drop
/// them; the descriptors are otherwise not needed (every candidate is announced).
fn srcset_urls(srcset: &str) -> Vec<&str> {
    let b = srcset.as_bytes();
    let ws = |c: u8| c.is_ascii_whitespace();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < b.len() && (ws(b[pos]) || b[pos] == b',') {
            pos += 1;
        }
        if pos >= b.len() {
            return out;
        }
        let start = pos;
        while pos < b.len() && !ws(b[pos]) {
            pos += 1;
        }
        // Slicing only at ASCII bytes or the ends keeps to character boundaries.
        let mut url = &srcset[start..pos];
        let mut descriptors = Vec::new();
        if url.ends_with(',') {
            url = url.trim_end_matches(',');
        } else {
            enum State {
                InDescriptor,
                InParens,
                AfterDescriptor,
            }
            let mut state = State::InDescriptor;
            while pos < b.len() && ws(b[pos]) {
                pos += 1;
            }
            let mut current: Option<usize> = None;
            loop {
                let c = b.get(pos).copied();
                match state {
                    State::InDescriptor => match c {
                        Some(c) if ws(c) => {
                            descriptors.extend(current.take().map(|s| &srcset[s..pos]));
                            state = State::AfterDescriptor;
                        }
                        Some(b',') => {
                            descriptors.extend(current.take().map(|s| &srcset[s..pos]));
                            pos += 1;
                            break;
                        }
                        None => {
                            descriptors.extend(current.take().map(|s| &srcset[s..pos]));
                            break;
                        }
                        Some(c) => {
                            current.get_or_insert(pos);
                            if c == b'(' {
                                state = State::InParens;
                            }
                        }
                    },
                    State::InParens => match c {
                        Some(b')') => state = State::InDescriptor,
                        None => {
                            descriptors.extend(current.take().map(|s| &srcset[s..pos]));
                            break;
                        }
                        Some(_) => {}
                    },
                    State::AfterDescriptor => match c {
                        Some(c) if ws(c) => {}
                        None => break,
                        Some(_) => {
                            // Reconsume in the descriptor state.
                            state = State::InDescriptor;
                            continue;
                        }
                    },
                }
                pos += 1;
            }
        }
        if !url.is_empty() && descriptors_valid(&descriptors) {
            out.push(url);
        }
    }
}

/// Whether a srcset candidate's descriptors are valid: at most one width (`100w`) or
/// density (`1.5x`), a height (`50h`) only beside a width.
fn descriptors_valid(descriptors: &[&str]) -> bool {
    let integer = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let positive = |s: &str| integer(s) && s.bytes().any(|c| c != b'0');
    let (mut width, mut density, mut height) = (false, false, false);
    for d in descriptors {
        let Some(value) = d.strip_suffix(['w', 'x', 'h']) else {
            return false;
        };
        match d.as_bytes()[d.len() - 1] {
            b'w' if !width && !density && positive(value) => width = true,
            b'x' if !width && !density && !height && float(value).is_some_and(|v| v >= 0.0) => {
                density = true
            }
            b'h' if !height && !density && positive(value) => height = true,
            _ => return false,
        }
    }
    !height || width
}

/// A "valid floating-point number" of the HTML standard (`-1`, `.5`, `2.5e3`), parsed.
fn float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    let whole = digits(&mut i);
    let fraction = if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return None;
        }
        true
    } else {
        false
    };
    if !whole && !fraction {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    s.parse().ok()
}

/// Whether a `<script>` element's `src` is fetched: a classic script (type absent,
/// empty or a JavaScript MIME type, or a legacy `language`) without `nomodule`, or a
/// module script. Data blocks (`text/template`, JSON) and import maps are not fetched.
fn script_is_fetched(el: &lol_html::send::Element<'_, '_>) -> bool {
    let ty = match (attribute(el, "type"), attribute(el, "language")) {
        (Some(ty), _) if !ty.is_empty() => ty,
        (None, Some(lang)) if !lang.is_empty() => format!("text/{lang}"),
        _ => "text/javascript".to_string(),
    };
    let ty = trim_ascii_whitespace(&ty).to_ascii_lowercase();
    if ty == "module" {
        return true;
    }
    JAVASCRIPT_TYPES.contains(&ty.as_str()) && !el.has_attribute("nomodule")
}

/// What the scanner's handlers share: where URLs resolve, and what was found.
struct State {
    /// The document base URL: the page's URL until the first `<base href>`.
    base: url::Url,
    /// Whether a `<base href>` was seen: only the first one counts.
    base_seen: bool,
    /// The page itself, normalised: never announced as one of its own objects.
    page: Option<String>,
    /// Every object announced (at most [`MAX_OBJECTS`]).
    seen: HashSet<String>,
    /// Objects found since the last [`Scanner::feed`] returned.
    out: Vec<String>,
    /// Text of the `<style>` element being read, at most [`MAX_STYLE_TEXT`] bytes.
    style: String,
    /// The `<style>` element being read went over [`MAX_STYLE_TEXT`]: ignore its rest.
    style_cut: bool,
}

impl State {
    fn full(&self) -> bool {
        self.seen.len() >= MAX_OBJECTS
    }

    /// Adds a reference as written in the page.
    fn add(&mut self, raw: &str) {
        if self.full() {
            return;
        }
        let Some(url) = resolve(&self.base, raw) else {
            return;
        };
        if self.page.as_deref() != Some(url.as_str()) && self.seen.insert(url.clone()) {
            self.out.push(url);
        }
    }

    fn add_srcset(&mut self, srcset: &str) {
        for url in srcset_urls(srcset) {
            self.add(url);
        }
    }

    /// Adds the references of a piece of CSS (`complete` false: it was cut short).
    fn add_css(&mut self, css: &str, complete: bool) {
        for url in crate::css::references(css, complete) {
            self.add(&url);
        }
    }

    fn set_base(&mut self, href: &str) {
        if std::mem::replace(&mut self.base_seen, true) {
            return;
        }
        // Resolved against the page's URL, still the base here.
        if let Ok(base) = self.base.join(trim_ascii_whitespace(href)) {
            if matches!(base.scheme(), "http" | "https") {
                self.base = base;
            }
        }
    }

    /// A chunk of a `<style>` element's text; `last` ends the element.
    fn style_text(&mut self, text: &str, last: bool) {
        if !self.style_cut && !self.full() {
            let room = MAX_STYLE_TEXT - self.style.len();
            if text.len() <= room {
                self.style.push_str(text);
            } else {
                let mut cut = room;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                self.style.push_str(&text[..cut]);
                self.style_cut = true;
                let css = std::mem::take(&mut self.style);
                self.add_css(&css, false);
            }
        }
        if last {
            let css = std::mem::take(&mut self.style);
            if !self.style_cut {
                self.add_css(&css, true);
            }
            self.style_cut = false;
        }
    }

    /// A start tag: the objects its attributes name.
    fn element(&mut self, el: &lol_html::send::Element<'_, '_>) {
        let attr = |name: &str| attribute(el, name);
        match el.tag_name().as_str() {
            "base" => {
                if let Some(href) = attr("href") {
                    self.set_base(&href);
                }
            }
            "img" => {
                attr("src").inspect(|u| self.add(u));
                attr("srcset").inspect(|s| self.add_srcset(s));
            }
            "link" => {
                let rel = attr("rel").unwrap_or_default().to_ascii_lowercase();
                let rels: Vec<&str> = rel.split_ascii_whitespace().collect();
                if rels.iter().any(|r| EMBEDDED_RELS.contains(r)) {
                    attr("href").inspect(|u| self.add(u));
                }
                if rels.contains(&"preload") {
                    attr("imagesrcset").inspect(|s| self.add_srcset(s));
                }
            }
            "script" if script_is_fetched(el) => {
                attr("src").inspect(|u| self.add(u));
            }
            "video" => {
                attr("poster").inspect(|u| self.add(u));
                attr("src").inspect(|u| self.add(u));
            }
            "audio" | "track" | "embed" | "iframe" | "frame" => {
                attr("src").inspect(|u| self.add(u));
            }
            "object" => {
                attr("data").inspect(|u| self.add(u));
            }
            "input" => {
                let image = attr("type")
                    .is_some_and(|t| trim_ascii_whitespace(&t).eq_ignore_ascii_case("image"));
                if image {
                    attr("src").inspect(|u| self.add(u));
                }
            }
            "body" | "table" | "td" | "th" => {
                attr("background").inspect(|u| self.add(u));
            }
            _ => {}
        }
        if let Some(css) = attr("style") {
            self.add_css(&css, true);
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A parser that only reads: its output is discarded.
type Rewriter = lol_html::send::HtmlRewriter<'static, fn(&[u8])>;

/// Collects embedded object URLs while a page streams through.
pub struct Scanner {
    rewriter: Option<Rewriter>,
    state: Arc<Mutex<State>>,
}

impl Scanner {
    /// A scanner for a page at `base` (an absolute URL); `None` if it is not one.
    pub fn new(base: &str) -> Option<Self> {
        let base = url::Url::parse(base).ok()?;
        let state = Arc::new(Mutex::new(State {
            page: normalize(base.as_str()),
            base,
            base_seen: false,
            seen: HashSet::new(),
            out: Vec::new(),
            style: String::new(),
            style_cut: false,
        }));
        let s = state.clone();
        let elements = lol_html::element!("*", move |el: &mut lol_html::send::Element<'_, '_>| {
            lock(&s).element(el);
            Ok(())
        });
        // `<source>` means a srcset in `<picture>`, a src in `<audio>`/`<video>`.
        let s = state.clone();
        let picture = lol_html::element!(
            "picture > source[srcset]",
            move |el: &mut lol_html::send::Element<'_, '_>| {
                attribute(el, "srcset").inspect(|set| lock(&s).add_srcset(set));
                Ok(())
            }
        );
        let s = state.clone();
        let media = lol_html::element!(
            "audio > source[src], video > source[src]",
            move |el: &mut lol_html::send::Element<'_, '_>| {
                attribute(el, "src").inspect(|u| lock(&s).add(u));
                Ok(())
            }
        );
        let s = state.clone();
        let style = lol_html::text!("style", move |t| {
            lock(&s).style_text(t.as_str(), t.last_in_text_node());
            Ok(())
        });
        let sink: fn(&[u8]) = |_| {};
        let rewriter = lol_html::send::HtmlRewriter::new(
            lol_html::send::Settings {
                element_content_handlers: vec![elements, picture, media, style],
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
            state,
        })
    }

    /// Feeds page bytes; returns newly found object URLs (absolute, normalised, http).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        if let Some(r) = self.rewriter.as_mut() {
            if r.write(bytes).is_err() {
                // Unparseable page: stop scanning, keep streaming it.
                self.rewriter = None;
                lock(&self.state).style.clear();
            } else if lock(&self.state).full() {
                // Nothing more can be announced: stop parsing.
                self.rewriter = None;
            }
        }
        self.take()
    }

    /// Ends the page; returns URLs found in its last bytes.
    pub fn finish(&mut self) -> Vec<String> {
        if let Some(r) = self.rewriter.take() {
            if r.end().is_ok() {
                // A `<style>` left open by the page ends with it.
                let mut state = lock(&self.state);
                if !state.style.is_empty() || state.style_cut {
                    state.style_text("", true);
                }
            }
        }
        self.take()
    }

    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut lock(&self.state).out)
    }
}

/// The objects a fetched stylesheet at `base` (the stylesheet's own URL, against which
/// its relative references resolve) makes the browser fetch: absolute, normalised
/// `http://` URLs as [`normalize`] gives them, without duplicates, at most
/// [`MAX_OBJECTS`], each at most [`crate::bundle::MAX_URL`] bytes. `https://` and other
/// schemes are left out (jondos cannot fetch inside TLS). Empty if `base` is not an
/// absolute URL.
pub fn stylesheet_urls(css: &str, base: &str) -> Vec<String> {
    let Ok(base) = url::Url::parse(base) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for raw in crate::css::css_urls(css) {
        if out.len() >= MAX_OBJECTS {
            break;
        }
        if let Some(url) = resolve(&base, &raw) {
            if !out.contains(&url) {
                out.push(url);
            }
        }
    }
    out
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

    const PAGE: &str = "http://site.example/dir/page.html";

    /// What a scanner finds in `page` fed in pieces of `step` bytes.
    fn scan_in(page: &str, step: usize) -> Vec<String> {
        let mut s = Scanner::new(PAGE).expect("base");
        let mut found = Vec::new();
        for chunk in page.as_bytes().chunks(step) {
            found.extend(s.feed(chunk));
        }
        found.extend(s.finish());
        found
    }

    fn scan(page: &str) -> Vec<String> {
        scan_in(page, page.len().max(1))
    }

    fn at(paths: &[&str]) -> Vec<String> {
        paths
            .iter()
            .map(|p| format!("http://site.example{p}"))
            .collect()
    }

    #[test]
    fn base_href_applies_after_it() {
        let page = "<head><link rel=icon href=before.ico><base target=_top>\
                    <base href=\"/assets/v2/\"><base href=http://wrong.example/>\
                    </head><body><img src=after.png><img src=/rooted.png></body>";
        assert_eq!(
            scan(page),
            at(&["/dir/before.ico", "/assets/v2/after.png", "/rooted.png"])
        );
        // An absolute base on another host.
        assert_eq!(
            scan("<base href=http://cdn.example:80/x/><img src=a.png>"),
            ["http://cdn.example/x/a.png"]
        );
        // An https base makes relative objects https: not announced.
        assert_eq!(
            scan("<base href=https://secure.example/><img src=a.png><img src=http://site.example/b.png>"),
            at(&["/b.png"])
        );
        // A base that is not http(s) is ignored, but it still was the first one.
        assert_eq!(
            scan("<base href=\"javascript:x\"><base href=/other/><img src=a.png>"),
            at(&["/dir/a.png"])
        );
    }

    #[test]
    fn img_src_and_srcset() {
        assert_eq!(
            scan("<img src=a.png srcset=\"b.png 1.5x, c.png 2x\" sizes=50vw>"),
            at(&["/dir/a.png", "/dir/b.png", "/dir/c.png"])
        );
    }

    #[test]
    fn srcset_urls_may_hold_commas() {
        assert_eq!(
            srcset_urls("a,b.png 1x, c.png?x=1,2 2x,d.png, e.png 100w 50h,f.png"),
            ["a,b.png", "c.png?x=1,2", "d.png", "e.png", "f.png"]
        );
        // A URL ending in commas: the commas end the candidate.
        assert_eq!(srcset_urls(" ,, g.png,,, h.png"), ["g.png", "h.png"]);
        // Invalid descriptors drop the candidate, not the ones after it.
        assert_eq!(
            srcset_urls(
                "bad1.png 1x 2x, bad2.png 10q, bad3.png 50h, bad4.png -1x, bad5.png 0w, \
                 bad6.png (a, b) 1x, ok.png 1e1x, ok2.png .5x"
            ),
            ["ok.png", "ok2.png"]
        );
        assert!(srcset_urls("").is_empty());
        assert!(srcset_urls(" , ").is_empty());
        assert_eq!(
            scan("<img srcset=\"data:image/png;base64,AA== 1x, /p,q.png 2x\">"),
            at(&["/p,q.png"])
        );
    }

    #[test]
    fn picture_sources() {
        let page = "<picture><source srcset=\"p.avif 1x, p2.avif 2x\" type=image/avif>\
                    <source srcset=p.webp><img src=p.jpg></picture>\
                    <div><source srcset=outside.png></div>";
        assert_eq!(
            scan(page),
            at(&["/dir/p.avif", "/dir/p2.avif", "/dir/p.webp", "/dir/p.jpg"])
        );
    }

    #[test]
    fn video_audio_sources_and_tracks() {
        let page = "<video poster=v.jpg src=v.mp4><source src=v.webm><track src=v.vtt \
                    default></video><audio src=a.mp3><source src=a.ogg></audio>\
                    <picture><source src=not-media.png></picture>";
        assert_eq!(
            scan(page),
            at(&[
                "/dir/v.jpg",
                "/dir/v.mp4",
                "/dir/v.webm",
                "/dir/v.vtt",
                "/dir/a.mp3",
                "/dir/a.ogg",
            ])
        );
    }

    #[test]
    fn embeds_objects_and_frames() {
        let page = "<embed src=e.swf><object data=o.svg></object><iframe src=i.html></iframe>\
                    <iframe src=\"\"></iframe><iframe src=about:blank></iframe>\
                    <frameset><frame src=f.html></frameset>";
        assert_eq!(
            scan(page),
            at(&["/dir/e.swf", "/dir/o.svg", "/dir/i.html", "/dir/f.html"])
        );
    }

    #[test]
    fn image_inputs_only() {
        let page = "<input type=IMAGE src=go.png><input type=text src=no1.png><input src=no2.png>";
        assert_eq!(scan(page), at(&["/dir/go.png"]));
    }

    #[test]
    fn link_relations() {
        let page =
            "<link rel=stylesheet href=s.css><link rel=\"alternate stylesheet\" href=alt.css>\
            <link rel=\"Shortcut Icon\" href=f.ico><link rel=apple-touch-icon href=t.png>\
            <link rel=preload as=font href=font.woff2>\
            <link rel=preload as=image href=hero.jpg imagesrcset=\"h1.jpg 1x, h,2.jpg 2x\">\
            <link rel=modulepreload href=m.js><link rel=manifest href=app.webmanifest>\
            <link rel=prefetch href=next.html><link rel=alternate href=feed.xml>\
            <link rel=dns-prefetch href=//cdn.example><link rel=canonical href=page.html>\
            <link rel=stylesheet imagesrcset=no.png href=s2.css>";
        assert_eq!(
            scan(page),
            at(&[
                "/dir/s.css",
                "/dir/alt.css",
                "/dir/f.ico",
                "/dir/t.png",
                "/dir/font.woff2",
                "/dir/hero.jpg",
                "/dir/h1.jpg",
                "/dir/h,2.jpg",
                "/dir/m.js",
                "/dir/app.webmanifest",
                "/dir/s2.css",
            ])
        );
    }

    #[test]
    fn scripts_that_are_fetched() {
        let page = "<script src=classic.js></script><script type=module src=mod.js></script>\
            <script type=\" Text/JavaScript \" src=typed.js></script>\
            <script language=JavaScript src=legacy.js></script>\
            <script type=\"\" src=empty-type.js></script>\
            <script nomodule src=old.js></script><script type=module nomodule src=mod2.js></script>\
            <script type=text/template src=tpl.html></script>\
            <script type=application/ld+json src=ld.json></script>\
            <script type=importmap src=map.json></script><script>inline()</script>";
        assert_eq!(
            scan(page),
            at(&[
                "/dir/classic.js",
                "/dir/mod.js",
                "/dir/typed.js",
                "/dir/legacy.js",
                "/dir/empty-type.js",
                "/dir/mod2.js",
            ])
        );
    }

    #[test]
    fn legacy_background_attributes() {
        let page = "<body background=bg.gif><table background=t.gif><tr><td background=c.gif>\
                    <th background=h.gif></table><div background=no.gif></div>";
        assert_eq!(
            scan(page),
            at(&["/dir/bg.gif", "/dir/t.gif", "/dir/c.gif", "/dir/h.gif"])
        );
    }

    #[test]
    fn style_elements_and_attributes() {
        let page = "<style>@import \"i.css\"; /* url(no.png) */\n\
                    body { background: url('bg.png') } @font-face { src: url(/f.woff2) }\
                    </style><div style=\"background-image: url(&quot;d.png&quot;)\">\
                    <p style='cursor: url(c.cur), auto; background: url(data:image/gif;base64,AA)'>\
                    <style></style><style>a{b:url(https://secure.example/x.png)}</style>";
        assert_eq!(
            scan(page),
            at(&[
                "/dir/i.css",
                "/dir/bg.png",
                "/f.woff2",
                "/dir/d.png",
                "/dir/c.cur",
            ])
        );
        // A `<style>` the page never closes ends with it.
        assert_eq!(scan("<style>a{b:url(open.png)}"), at(&["/dir/open.png"]));
    }

    #[test]
    fn style_text_is_bounded() {
        let filler = "a{color:red}".repeat(MAX_STYLE_TEXT / 12 + 1);
        let page = format!(
            "<style>a{{b:url(first.png)}}{filler}a{{b:url(beyond.png)}}</style>\
             <style>a{{b:url(next.png)}}</style>"
        );
        assert_eq!(scan(&page), at(&["/dir/first.png", "/dir/next.png"]));
        assert_eq!(
            scan_in(&page, 1000),
            at(&["/dir/first.png", "/dir/next.png"])
        );
        // A URL cut by the limit is not announced truncated.
        let style = |kept: usize| {
            let pad = format!("{} ", "x".repeat(MAX_STYLE_TEXT - kept - 1));
            format!("<style>{pad}url(/cut-here.png)</style>")
        };
        assert!(scan(&style("url(/cut".len())).is_empty());
        assert_eq!(
            scan(&style("url(/cut-here.png)".len())),
            at(&["/cut-here.png"])
        );
    }

    #[test]
    fn character_references_are_decoded() {
        assert_eq!(
            decode_references(
                "a?x=1&amp;y=2&amp z&#38;w&#x26;v&#X2F&ampx&copy=3&quot;&#0;&#x80;&bogus;&"
            ),
            "a?x=1&y=2& z&w&v/&ampx&copy=3\"\u{fffd}\u{20ac}&bogus;&"
        );
        assert_eq!(
            decode_references("&eacute;t&eacute&#99999999999;"),
            "\u{e9}t\u{e9}\u{fffd}"
        );
        let page = "<img src=\"/img?id=1&amp;size=2\"><img srcset=\"/s?a=1&amp;b=2 1x\">\
                    <p style=\"background:url(&quot;/q.png&quot;)\">\
                    <script type=\"text&sol;javascript\" src=\"/j.js\"></script>";
        assert_eq!(
            scan(page),
            at(&["/img?id=1&size=2", "/s?a=1&b=2", "/q.png", "/j.js"])
        );
    }

    #[test]
    fn inert_and_foreign_references_are_skipped() {
        let page = "<img src=\"data:image/png;base64,AAAA\"><img src=\"javascript:alert(1)\">\
            <img src=\"blob:http://site.example/uuid\"><img src=about:blank><img src=\"\">\
            <img src=\"  \"><img src=#top><img src=page.html#x><img src=https://secure.example/a.png>\
            <img src=ftp://files.example/a.png><img src=\"http://[bad\"><img src=\" ok.png \">";
        assert_eq!(scan(page), at(&["/dir/ok.png"]));
    }

    #[test]
    fn at_most_max_objects() {
        let page: String = (0..MAX_OBJECTS + 20)
            .map(|i| format!("<img src=/{i}.png><img src=/{i}.png>"))
            .collect();
        let found = scan(&page);
        assert_eq!(found.len(), MAX_OBJECTS);
        assert_eq!(found[0], "http://site.example/0.png");
        let long = format!("<img src=/{}><img src=short.png>", "a".repeat(MAX_URL));
        assert_eq!(scan(&long), at(&["/dir/short.png"]));
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let page = "<html><head><link rel=stylesheet href=s.css><base href=/b/>\
            <style>@import 'i.css'; a { background: url( \"é-bg.png\" ) }</style>\
            <script type=module src=m.js></script></head>\
            <body style=\"background:url(body.png)\"><picture><source srcset=\"p,1.webp 1x, \
            p2.webp 2x\"></picture><img src=a.png srcset=\"a2.png 2x\"><video poster=v.jpg>\
            <source src=v.mp4><track src=t.vtt></video><iframe src=f.html></iframe>\
            <object data=o.svg></object><input type=image src=go.png></body></html>";
        let whole = scan(page);
        assert_eq!(whole.len(), 15, "{whole:?}");
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(scan_in(page, step), whole, "step {step}");
        }
    }

    proptest::proptest! {
        #[test]
        fn scanner_announces_only_normalised_http(
            page in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            step in 1usize..64,
        ) {
            let mut s = Scanner::new(PAGE).expect("base");
            let mut found = Vec::new();
            for chunk in page.chunks(step) {
                found.extend(s.feed(chunk));
            }
            found.extend(s.finish());
            check(&found)?;
        }

        #[test]
        fn scanner_on_tag_soup(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("<img src=".to_string()),
                    proptest::strategy::Just("<img srcset=\"".to_string()),
                    proptest::strategy::Just("<base href=".to_string()),
                    proptest::strategy::Just("<link rel=preload imagesrcset='".to_string()),
                    proptest::strategy::Just("<style>".to_string()),
                    proptest::strategy::Just("</style>".to_string()),
                    proptest::strategy::Just("<p style='".to_string()),
                    proptest::strategy::Just("url(".to_string()),
                    proptest::strategy::Just("http://".to_string()),
                    proptest::strategy::Just("//".to_string()),
                    "[ ,\"'<>=()/:.#a-z0-9\\\\]{0,6}",
                    "\\PC{0,4}",
                ],
                0..60,
            ),
            step in 1usize..16,
        ) {
            let page = parts.concat();
            let whole = scan(&page);
            check(&whole)?;
            proptest::prop_assert_eq!(scan_in(&page, step), whole);
        }
    }

    fn check(found: &[String]) -> Result<(), proptest::test_runner::TestCaseError> {
        proptest::prop_assert!(found.len() <= MAX_OBJECTS);
        for url in found {
            proptest::prop_assert!(url.len() <= MAX_URL);
            proptest::prop_assert!(url.starts_with("http://"), "{}", url);
            proptest::prop_assert_eq!(normalize(url), Some(url.clone()));
        }
        Ok(())
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

    #[test]
    fn stylesheet_urls_resolve_against_the_stylesheet() {
        let css = "@import url(/base.css); a{background:url(../img/a.png)} \
                   b{background:url(https://secure.example/x.png)} \
                   c{background:url(http://cdn.example:80/y.png#frag)} \
                   d{background:url(../img/a.png)} e{background:url(javascript:x)}";
        assert_eq!(
            stylesheet_urls(css, "http://site.example/css/main.css"),
            [
                "http://site.example/base.css",
                "http://site.example/img/a.png",
                "http://cdn.example/y.png",
            ]
        );
        assert!(stylesheet_urls(css, "not a url").is_empty());
        let many: String = (0..MAX_OBJECTS + 10)
            .map(|i| format!("a{{b:url(/{i}.png)}}"))
            .collect();
        assert_eq!(
            stylesheet_urls(&many, "http://site.example/").len(),
            MAX_OBJECTS
        );
    }
}
