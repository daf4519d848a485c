//! What can go wrong with the connection itself. A server that answers — even "no" — is not
//! an error here: every step returns its reply, and the caller judges it.

use crate::proto::ReplyError;
use std::io;
use std::path::PathBuf;

/// A failure of the connection or of what we send over it; the session is not usable
/// after any of them (the caller should drop it without QUIT).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Connecting (including the name lookup) failed or took longer than the timeout.
    #[error("connecting to {peer}: {source}")]
    Connect { peer: String, source: io::Error },
    /// Reading or writing failed, or one step took longer than the timeout (`source` is
    /// then `io::ErrorKind::TimedOut` and names the timeout).
    #[error("{doing} {peer}: {source}")]
    Io {
        peer: String,
        /// "reading a reply from", "sending to".
        doing: &'static str,
        source: io::Error,
    },
    /// The server closed the connection while we waited for a reply.
    #[error("{peer} closed the connection")]
    Closed { peer: String },
    /// The server sent something that is not an SMTP reply.
    #[error("{peer} sent a malformed reply: {source}")]
    Malformed { peer: String, source: ReplyError },
    /// The TLS handshake failed or timed out.
    #[error("TLS with {peer} failed: {source}")]
    Tls { peer: String, source: io::Error },
    /// Bytes arrived after the 220 to STARTTLS, before the handshake: they were sent in
    /// plain text and could have been injected (RFC 3207 §6).
    #[error("{peer} sent data after its STARTTLS reply, before TLS")]
    DataBeforeTls { peer: String },
    /// The message file to send could not be read.
    #[error("spool file {}: {source}", path.display())]
    Message { path: PathBuf, source: io::Error },
    /// The message file changed size while BDAT was sending it: the chunk size we announced
    /// is wrong, so the connection was given up mid-chunk (the server discards it).
    #[error("spool file {} changed size while being sent", path.display())]
    MessageChanged { path: PathBuf },
    /// An address for MAIL or RCPT holds CR, LF or NUL: sent, it would end the command line
    /// and smuggle in a command of its own. Nothing was sent; the session is still usable.
    #[error("address <{}> cannot be sent in a {verb} command", address.escape_debug())]
    Unsendable { verb: &'static str, address: String },
}

impl Error {
    /// Whether the session may still be used (and QUIT sent) after this error.
    pub fn session_usable(&self) -> bool {
        matches!(self, Error::Unsendable { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
