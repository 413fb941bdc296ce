//! Redaction of what must not reach logs: destinations, addresses, account names,
//! and secrets.
//!
//! Owns [`Sensitive`], whose `Display` prints `[scrubbed]` unless unsafe logging was
//! switched on for this process (`crowds --unsafe-logging`). A jondo's log must never
//! become the surveillance record Crowds exists to prevent, so the default is scrubbed.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static UNSAFE_LOGGING: AtomicBool = AtomicBool::new(false);

/// Turns unsafe logging on or off for the whole process.
pub fn set_unsafe_logging(on: bool) {
    UNSAFE_LOGGING.store(on, Ordering::Relaxed);
}

/// Whether unsafe logging is on.
pub fn unsafe_logging() -> bool {
    UNSAFE_LOGGING.load(Ordering::Relaxed)
}

/// A value that is shown in logs only with unsafe logging.
pub struct Sensitive<T>(pub T);

impl<T: fmt::Display> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if unsafe_logging() {
            self.0.fmt(f)
        } else {
            f.write_str("[scrubbed]")
        }
    }
}

impl<T: fmt::Display> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A password (or other secret string): zeroized when dropped, never printed by `Debug`
/// or `Display`, only read through [`Secret::expose`].
#[derive(Clone)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: String) -> Self {
        Self(zeroize::Zeroizing::new(secret))
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbed_unless_unsafe() {
        assert_eq!(Sensitive("example.org").to_string(), "[scrubbed]");
        set_unsafe_logging(true);
        assert_eq!(Sensitive("example.org").to_string(), "example.org");
        set_unsafe_logging(false);
        assert_eq!(format!("{:?}", Sensitive("x")), "[scrubbed]");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(s.expose(), "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
