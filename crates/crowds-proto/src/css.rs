//! The references a stylesheet makes, for the timing defence: `url(…)` (backgrounds,
//! web fonts in `@font-face`, cursors…), `@import` and the images of `image-set(…)`.
//! Pure text scanning, no I/O, fed untrusted bytes (fuzzed).
//!
//! [`css_urls`] follows the tokenizer of CSS Syntax Level 3 as far as a reference is
//! concerned: comments, strings and their escapes, escaped identifiers (`u\72 l(`),
//! unquoted URLs and bad URLs (which browsers never fetch). It does not parse rules, so
//! it also finds URLs in declarations a browser would drop (an unknown property, a
//! losing `@media` branch): announcing an object the browser then does not ask for
//! costs the exit one fetch, never the user's anonymity.
//!
//! [`crate::html::stylesheet_urls`] resolves those references the way the exit announces
//! objects. Only one level is followed: what an imported stylesheet in
//! turn refers to needs that stylesheet fetched and scanned in its turn.

/// The raw references in a piece of CSS (a stylesheet, a `<style>` element's text or a
/// `style` attribute), in order, as written (unresolved, duplicates kept).
///
/// `data:` URLs and local references (`url(#id)`, which name a part of the document)
/// are left out, as are empty URLs and bad URLs (`url(a b)`), which browsers do not
/// fetch either. Never panics, whatever the input; linear time.
pub fn css_urls(css: &str) -> Vec<String> {
    references(css, true)
}

/// The references in `css`. With `complete` false the text was cut short, and a string
/// or URL still open at its end is left out (it would be a truncated URL).
pub(crate) fn references(css: &str, complete: bool) -> Vec<String> {
    let mut t = Tokens {
        s: css,
        pos: 0,
        complete,
        out: Vec::new(),
    };
    t.run();
    t.out
}

/// Where the tokenizer stands in the text, and what it has found.
struct Tokens<'a> {
    s: &'a str,
    /// Byte offset, always on a character boundary.
    pos: usize,
    /// Whether the end of `s` is the end of the stylesheet.
    complete: bool,
    out: Vec<String>,
}

fn is_newline(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\x0c')
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t') || is_newline(c)
}

/// A character of an identifier (CSS "ident code point"), escapes aside.
fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || !c.is_ascii()
}

/// Characters that make an unquoted `url(` a bad URL.
fn is_non_printable(c: char) -> bool {
    matches!(c, '\0'..='\x08' | '\x0b' | '\x0e'..='\x1f' | '\x7f')
}

impl Tokens<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.s[self.pos..].chars();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// A backslash here starts an escape (it is not followed by a newline or the end).
    fn at_escape(&self) -> bool {
        self.peek() == Some('\\') && self.peek2().is_some_and(|c| !is_newline(c))
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(is_whitespace) {
            self.bump();
        }
    }

    /// Skips a comment if one starts here; whether it did.
    fn skip_comment(&mut self) -> bool {
        if !self.s[self.pos..].starts_with("/*") {
            return false;
        }
        match self.s[self.pos + 2..].find("*/") {
            Some(end) => self.pos += 2 + end + 2,
            None => self.pos = self.s.len(),
        }
        true
    }

    /// After the backslash of a valid escape: the code point it stands for.
    fn escape(&mut self) -> char {
        let Some(c) = self.bump() else {
            return char::REPLACEMENT_CHARACTER;
        };
        if !c.is_ascii_hexdigit() {
            return c;
        }
        let mut value = c.to_digit(16).unwrap_or(0);
        for _ in 0..5 {
            match self.peek().and_then(|c| c.to_digit(16)) {
                Some(d) => {
                    value = value * 16 + d;
                    self.bump();
                }
                None => break,
            }
        }
        // One whitespace after a hex escape belongs to it (CR LF counts as one).
        if self.s[self.pos..].starts_with("\r\n") {
            self.pos += 2;
        } else if self.peek().is_some_and(is_whitespace) {
            self.bump();
        }
        match char::from_u32(value) {
            Some('\0') | None => char::REPLACEMENT_CHARACTER,
            Some(c) => c,
        }
    }

    /// An identifier (name code points and escapes) starting here, possibly empty.
    fn name(&mut self) -> String {
        let mut name = String::new();
        loop {
            match self.peek() {
                Some(c) if is_name(c) => {
                    self.bump();
                    name.push(c);
                }
                Some('\\') if self.at_escape() => {
                    self.bump();
                    name.push(self.escape());
                }
                _ => return name,
            }
        }
    }

    /// After the opening quote: the string's value, `None` for a bad string (an
    /// unescaped newline) or one cut short by the end of incomplete text.
    fn string(&mut self, quote: char) -> Option<String> {
        let mut value = String::new();
        loop {
            match self.peek() {
                None => return self.complete.then_some(value),
                Some(c) if c == quote => {
                    self.bump();
                    return Some(value);
                }
                Some(c) if is_newline(c) => return None,
                Some('\\') => {
                    self.bump();
                    match self.peek() {
                        None => {}
                        Some('\r') if self.peek2() == Some('\n') => self.pos += 2,
                        Some(c) if is_newline(c) => {
                            self.bump();
                        }
                        Some(_) => value.push(self.escape()),
                    }
                }
                Some(c) => {
                    self.bump();
                    value.push(c);
                }
            }
        }
    }

    /// After `url(` and any whitespace, not at a quote: the unquoted URL, `None` for a
    /// bad URL (whose remnants are skipped, as browsers do).
    fn unquoted_url(&mut self) -> Option<String> {
        let mut value = String::new();
        loop {
            match self.bump() {
                None => return self.complete.then_some(value),
                Some(')') => return Some(value),
                Some(c) if is_whitespace(c) => {
                    self.skip_whitespace();
                    match self.peek() {
                        Some(')') => {
                            self.bump();
                            return Some(value);
                        }
                        None => return self.complete.then_some(value),
                        Some(_) => break,
                    }
                }
                Some('"' | '\'' | '(') => break,
                Some(c) if is_non_printable(c) => break,
                Some('\\') => {
                    if self.peek().is_some_and(|c| !is_newline(c)) {
                        value.push(self.escape());
                    } else {
                        break;
                    }
                }
                Some(c) => value.push(c),
            }
        }
        // Bad URL: consume up to the closing parenthesis; escapes cannot close it.
        loop {
            match self.peek() {
                None => return None,
                Some(')') => {
                    self.bump();
                    return None;
                }
                Some('\\') if self.at_escape() => {
                    self.bump();
                    self.escape();
                }
                Some(_) => {
                    self.bump();
                }
            }
        }
    }

    fn found(&mut self, value: Option<String>) {
        let Some(value) = value else {
            return;
        };
        let v = value.trim_matches(is_whitespace);
        let data = v.len() >= 5 && v.as_bytes()[..5].eq_ignore_ascii_case(b"data:");
        if !v.is_empty() && !v.starts_with('#') && !data {
            self.out.push(v.to_string());
        }
    }

    fn run(&mut self) {
        // Depth of open parentheses and functions, and the depth of the arguments of an
        // open `image-set(`, whose strings are image URLs.
        let mut depth = 0usize;
        let mut image_set: Option<usize> = None;
        // Just after `@import` (whitespace and comments aside): a string is its URL.
        let mut import = false;
        while let Some(c) = self.peek() {
            if self.skip_comment() {
                continue;
            }
            match c {
                c if is_whitespace(c) => {
                    self.bump();
                    continue;
                }
                '"' | '\'' => {
                    self.bump();
                    let value = self.string(c);
                    if import || image_set == Some(depth) {
                        self.found(value);
                    }
                }
                '@' | '#' => {
                    self.bump();
                    let name = self.name();
                    if c == '@' && name.eq_ignore_ascii_case("import") {
                        import = true;
                        continue;
                    }
                }
                '(' => {
                    self.bump();
                    depth += 1;
                }
                ')' => {
                    self.bump();
                    depth = depth.saturating_sub(1);
                    if image_set.is_some_and(|d| depth < d) {
                        image_set = None;
                    }
                }
                c if is_name(c) || self.at_escape() => {
                    let name = self.name();
                    if self.peek() == Some('(') {
                        self.bump();
                        if name.eq_ignore_ascii_case("url") {
                            self.skip_whitespace();
                            if !matches!(self.peek(), Some('"' | '\'')) {
                                let value = self.unquoted_url();
                                self.found(value);
                                import = false;
                                continue;
                            }
                            // `url("…")` is a function whose string argument is the URL.
                            depth += 1;
                            let Some(quote) = self.bump() else { break };
                            let value = self.string(quote);
                            self.found(value);
                        } else {
                            depth += 1;
                            let lower = name.to_ascii_lowercase();
                            if image_set.is_none()
                                && (lower == "image-set" || lower == "-webkit-image-set")
                            {
                                image_set = Some(depth);
                            }
                        }
                    }
                }
                _ => {
                    self.bump();
                }
            }
            import = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let css = r#"a { background: url(a.png) } b { background: url( "b.png" ) }
            c { background: URL('c.png') } d { cursor: url(  d.cur  ), auto }"#;
        assert_eq!(css_urls(css), ["a.png", "b.png", "c.png", "d.cur"]);
    }

    #[test]
    fn imports() {
        let css = "@import \"one.css\";\n@import url(two.css) screen;\n@IMPORT 'three.css' \
                   layer(x);\n@import /* c */ \"four.css\";\n@media print { a { color: red } }";
        assert_eq!(
            css_urls(css),
            ["one.css", "two.css", "three.css", "four.css"]
        );
        // A string elsewhere is not a URL.
        assert!(css_urls("a::before { content: \"x.png\" } @charset \"utf-8\";").is_empty());
    }

    #[test]
    fn comments_and_strings_hide_urls() {
        let css = "/* url(no1.png) */ a { content: \"url(no2.png)\"; background: url(yes.png) }\
                   /* unterminated url(no3.png)";
        assert_eq!(css_urls(css), ["yes.png"]);
        // Inside an unquoted url() a comment is not one.
        assert_eq!(css_urls("a{b:url(x/*y*/.png)}"), ["x/*y*/.png"]);
    }

    #[test]
    fn escapes_quotes_and_bad_urls() {
        assert_eq!(css_urls(r"a{b:url(a\)b.png)}"), ["a)b.png"]);
        assert_eq!(css_urls(r#"a{b:url("q\"uote.png")}"#), ["q\"uote.png"]);
        assert_eq!(css_urls(r#"a{b:url('it''s.png')}"#), ["it"]);
        assert_eq!(css_urls(r"a{b:u\72 l(esc.png)}"), ["esc.png"]);
        assert_eq!(css_urls(r"a{b:url(\66 oo.png)}"), ["foo.png"]);
        assert_eq!(css_urls("a{b:url(\"line\\\ncont.png\")}"), ["linecont.png"]);
        // Bad strings and bad URLs are never fetched; what follows a bad URL still is.
        assert!(css_urls("a{b:url(\"broken\n.png\")}").is_empty());
        assert_eq!(css_urls("c{d:url(a b.png) url(ok.png)}"), ["ok.png"]);
        assert_eq!(css_urls("a{b:url(x(y).png) url(ok.png)}"), ["ok.png"]);
        // Other functions with a url-like name are not url().
        assert!(css_urls("a{b:myurl(x.png) -url(y.png)}").is_empty());
    }

    #[test]
    fn data_local_and_empty_urls_are_skipped() {
        let css = "a{b:url(data:image/png;base64,AAAA) url('DATA:x') url(#clip) url() \
                   url('') url(real.png)}";
        assert_eq!(css_urls(css), ["real.png"]);
    }

    #[test]
    fn fonts_and_image_sets() {
        let css = "@font-face { font-family: F; src: url(f.woff2) format(\"woff2\"), \
                   url(\"f.woff\") format('woff'); }\
                   a { background-image: image-set(\"i1.png\" 1x, url(i2.png) 2x, \
                   \"i3.avif\" type(\"image/avif\")); content: \"not\" }\
                   b { background: -webkit-image-set('w.png' 1x) }";
        assert_eq!(
            css_urls(css),
            ["f.woff2", "f.woff", "i1.png", "i2.png", "i3.avif", "w.png"]
        );
    }

    #[test]
    fn unterminated_at_the_end() {
        assert_eq!(css_urls("a{b:url(end.png"), ["end.png"]);
        assert_eq!(css_urls("@import 'end.css"), ["end.css"]);
        // Cut-short text: the open URL may be truncated, leave it out.
        assert!(references("a{b:url(end.p", false).is_empty());
        assert!(references("@import 'end.c", false).is_empty());
        assert_eq!(references("a{b:url(x.png)}", false), ["x.png"]);
    }

    proptest::proptest! {
        #[test]
        fn css_urls_never_panics(css in "\\PC*") {
            let _ = css_urls(&css);
            let _ = references(&css, false);
        }

        #[test]
        fn css_urls_never_panics_on_css_like_text(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("url(".to_string()),
                    proptest::strategy::Just("@import ".to_string()),
                    proptest::strategy::Just("image-set(".to_string()),
                    proptest::strategy::Just("/*".to_string()),
                    proptest::strategy::Just("*/".to_string()),
                    "[\"'()\\\\\n\r\x0c ;{}#@a-f0-9]{0,4}",
                    "\\PC{0,3}",
                ],
                0..40,
            )
        ) {
            let css: String = parts.concat();
            for url in css_urls(&css) {
                proptest::prop_assert!(!url.is_empty());
            }
        }
    }
}
