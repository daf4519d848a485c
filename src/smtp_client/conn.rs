//! One client connection: bytes to and from the server, every step (connecting, the TLS
//! handshake, one whole reply, one write) bounded by one timeout, replies parsed by
//! [`crate::proto::parse_reply`], and the switch to TLS.

use super::error::{Error, Result};
use super::target::Target;
use crate::proto::{RemoteReply, parse_reply};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// QUIT is a courtesy once the outcome is known: it may not hold the caller longer.
const QUIT_MAX: Duration = Duration::from_secs(10);

/// Anything we can speak SMTP over: TCP, a Unix socket, or TLS on either.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) struct Conn {
    stream: Box<dyn Io>,
    /// Bytes received but not yet parsed into a reply.
    buf: Vec<u8>,
    /// How long one step may take. A whole reply is one step (not each read of it), so a
    /// server trickling a byte at a time cannot hold the caller for as long as it likes;
    /// the message content is many steps (one per write), so a large message to a slow
    /// server is not cut off half-way — after the server may already have most of it.
    limit: Duration,
    /// Shortens the steps of QUIT, whose answer does not matter.
    quitting: bool,
    /// The address as the operator wrote it, for every error message.
    pub peer: String,
    /// TLS is up (implicit or after STARTTLS).
    pub encrypted: bool,
    /// The peer is this host (Unix socket or loopback): credentials may go in plain text.
    pub local: bool,
}

impl Conn {
    /// Connects, within `limit`, the bound of every later step too.
    pub async fn connect(target: &Target, limit: Duration) -> Result<Conn> {
        let peer = target.to_string();
        let deadline = Instant::now() + limit;
        let connect_error = |source| Error::Connect {
            peer: peer.clone(),
            source,
        };
        let (stream, local): (Box<dyn Io>, bool) = match target {
            Target::Unix(path) => {
                let s = by_deadline(deadline, limit, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(connect_error)?;
                (Box::new(s), true)
            }
            Target::Tcp { host, port } => {
                let s = by_deadline(deadline, limit, connect_tcp(host, *port))
                    .await
                    .map_err(connect_error)?;
                // We batch commands ourselves; Nagle would only add delay between them.
                let _ = s.set_nodelay(true);
                let local = s.peer_addr().map(|a| a.ip().is_loopback()).unwrap_or(false);
                (Box::new(s), local)
            }
        };
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(1024),
            limit,
            quitting: false,
            peer,
            encrypted: false,
            local,
        })
    }

    /// Starts TLS on the connection (right after connect, or after a 220 to STARTTLS).
    /// After a failure the connection is gone: every later step fails.
    pub async fn start_tls(
        &mut self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<()> {
        if !self.buf.is_empty() {
            // Bytes that arrived before the handshake were sent in plain text and could
            // have been injected; RFC 3207 §6 says discard, we give up on the session.
            return Err(Error::DataBeforeTls {
                peer: self.peer.clone(),
            });
        }
        // The plain stream goes into the handshake; a stream that reads nothing and
        // writes nowhere holds its place meanwhile (and for good, if the handshake fails).
        let placeholder = Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink()));
        let plain = std::mem::replace(&mut self.stream, placeholder);
        let handshake = TlsConnector::from(config).connect(name, plain);
        let tls = by_deadline(Instant::now() + self.limit, self.limit, handshake)
            .await
            .map_err(|source| Error::Tls {
                peer: self.peer.clone(),
                source,
            })?;
        if let (Some(version), Some(suite)) = (
            tls.get_ref().1.protocol_version(),
            tls.get_ref().1.negotiated_cipher_suite(),
        ) {
            tracing::debug!(upstream = %self.peer, "TLS up: {version:?} {:?}", suite.suite());
        }
        self.stream = Box::new(tls);
        self.encrypted = true;
        Ok(())
    }

    /// Reads the next complete reply, within one step.
    pub async fn read_reply(&mut self) -> Result<RemoteReply> {
        self.read_reply_within(Duration::ZERO).await
    }

    /// Reads the next complete reply, within one step and `extra`.
    pub async fn read_reply_within(&mut self, extra: Duration) -> Result<RemoteReply> {
        let deadline = self.step_deadline() + extra;
        let mut chunk = [0u8; 4096];
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    tracing::trace!(upstream = %self.peer, "S: {}", reply.one_line());
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(Error::Malformed {
                        peer: self.peer.clone(),
                        source,
                    });
                }
            }
            let n = by_deadline(deadline, self.limit, self.stream.read(&mut chunk))
                .await
                .map_err(|e| self.io_error("reading a reply from", e))?;
            if n == 0 {
                return Err(Error::Closed {
                    peer: self.peer.clone(),
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends bytes as they are (commands with their CRLF, or message content).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let deadline = self.step_deadline();
        let stream = &mut self.stream;
        let result = by_deadline(deadline, self.limit, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await;
        result.map_err(|e| self.io_error("sending to", e))
    }

    /// Sends one command line and reads its reply. `shown` replaces the line in logs when it
    /// carries a secret.
    pub async fn command(&mut self, line: &str, shown: Option<&str>) -> Result<RemoteReply> {
        tracing::trace!(upstream = %self.peer, "C: {}", shown.unwrap_or(line));
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.send(&bytes).await?;
        self.read_reply().await
    }

    /// Says goodbye; the server's answer does not matter any more.
    pub async fn quit(mut self) {
        self.quitting = true;
        if self.command("QUIT", None).await.is_ok() {
            let deadline = self.step_deadline();
            let _ = by_deadline(deadline, self.limit, self.stream.shutdown()).await;
        }
    }

    fn step_deadline(&self) -> Instant {
        let limit = if self.quitting {
            self.limit.min(QUIT_MAX)
        } else {
            self.limit
        };
        Instant::now() + limit
    }

    fn io_error(&self, doing: &'static str, source: io::Error) -> Error {
        Error::Io {
            peer: self.peer.clone(),
            doing,
            source,
        }
    }
}

async fn connect_tcp(host: &str, port: u16) -> io::Result<tokio::net::TcpStream> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return tokio::net::TcpStream::connect((ip, port)).await;
    }
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("cannot resolve: {e}")))?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host name has no address");
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Runs `fut` until `deadline`; running out of time is an `io::ErrorKind::TimedOut` that
/// names the configured `limit`.
async fn by_deadline<T, E>(
    deadline: Instant,
    limit: Duration,
    fut: impl Future<Output = std::result::Result<T, E>>,
) -> io::Result<T>
where
    E: Into<io::Error>,
{
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no progress within the timeout of {} s",
                limit.as_secs_f64()
            ),
        )),
    }
}
