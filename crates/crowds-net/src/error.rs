//! The error type of the daemons.

use std::io;

/// What went wrong in a daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// An I/O operation failed; the string says which.
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
    /// A setting or file is unusable; the string says what to do.
    #[error("{0}")]
    Config(String),
    /// The blender's account store failed (the store's own error is the source).
    #[error("account store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The blender refused our login.
    #[error("the blender refused the login: unknown account or wrong password")]
    LoginRefused,
    /// The blender limits how often an account joins; try again after this long.
    #[error("the blender admitted this account too recently; it may join again in {0:?}")]
    JoinTooSoon(std::time::Duration),
    /// The blender refused the join for a reason that waiting will not fix (for
    /// example: the advertised peer address answers with another key).
    #[error("the blender refused to admit this jondo: {0}")]
    JoinRefused(String),
    /// The blender answered something we cannot use.
    #[error("blender: {0}")]
    Blender(String),
    /// TLS set-up failed.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

impl NodeError {
    /// An I/O error with what we were doing.
    pub fn io(what: impl Into<String>, e: io::Error) -> Self {
        NodeError::Io(what.into(), e)
    }
}
