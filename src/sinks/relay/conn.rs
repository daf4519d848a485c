//! One client connection: bytes to and from the server, every step (connecting, the TLS
//! handshake, one whole reply, one write) bounded by the sink's `timeout`, replies parsed
//! by [`super::reply`], and the switch to TLS.

use super::reply::{Reply, parse_reply};
use crate::sinks::SinkError;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// The status of a failed TLS handshake (RFC 3463: "cryptographic failure").
pub const TLS_FAILED: &str = "4.7.5";

/// QUIT is a courtesy once the outcome is known: it may not hold a delivery longer.
const QUIT_MAX: Duration = Duration::from_secs(10);

/// Anything we can speak SMTP over: TCP, a Unix socket, or TLS on either.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where the upstream listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host` has no brackets, also for IPv6.
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
}

impl Target {
    /// "host:port", "[v6]:port" or "unix:/absolute/path".
    pub fn parse(address: &str) -> Result<Target, String> {
        if let Some(path) = address.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "address \"{address}\": expected unix:/absolute/path"
                ));
            }
            return Ok(Target::Unix(path));
        }
        let bad = || {
            format!("address \"{address}\": expected host:port, [ipv6]:port or unix:/absolute/path")
        };
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(bad)?;
        let host = match host.strip_prefix('[') {
            Some(h) => h.strip_suffix(']').ok_or_else(bad)?,
            // An IPv6 address needs brackets, or "::1:25" would be ambiguous.
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        if host.is_empty() || host.contains(['[', ']', ' ', '/']) {
            return Err(bad());
        }
        Ok(Target::Tcp {
            host: host.to_string(),
            port,
        })
    }

    /// The host part, to check a certificate against.
    pub fn host(&self) -> Option<&str> {
        match self {
            Target::Tcp { host, .. } => Some(host),
            Target::Unix(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

pub struct Conn {
    stream: Box<dyn Io>,
    /// Bytes received but not yet parsed into a reply.
    buf: Vec<u8>,
    /// How long one step may take. A whole reply is one step (not each read of it), so an
    /// upstream trickling a byte at a time cannot hold a delivery for as long as it likes;
    /// the message content is many steps (one per write), so a large message to a slow
    /// upstream is not cut off half-way — after the upstream may already have most of it.
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
    pub async fn connect(target: &Target, limit: Duration) -> Result<Conn, SinkError> {
        let peer = target.to_string();
        let deadline = Instant::now() + limit;
        let (stream, local): (Box<dyn Io>, bool) = match target {
            Target::Unix(path) => {
                let s = by_deadline(deadline, limit, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|e| connect_error(&peer, e))?;
                (Box::new(s), true)
            }
            Target::Tcp { host, port } => {
                let s = by_deadline(deadline, limit, connect_tcp(host, *port))
                    .await
                    .map_err(|e| connect_error(&peer, e))?;
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
    pub async fn start_tls(
        self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Conn, SinkError> {
        if !self.buf.is_empty() {
            // Bytes that arrived before the handshake were sent in plain text and could
            // have been injected; RFC 3207 §6 says discard, we give up on the session.
            return Err(SinkError::temporary(
                TLS_FAILED,
                format!(
                    "{} sent data after its STARTTLS reply, before TLS",
                    self.peer
                ),
            ));
        }
        let Conn {
            stream,
            buf,
            limit,
            peer,
            local,
            ..
        } = self;
        let handshake = TlsConnector::from(config).connect(name, stream);
        let tls = by_deadline(Instant::now() + limit, limit, handshake)
            .await
            .map_err(|e| {
                SinkError::temporary(TLS_FAILED, format!("TLS with {peer} failed: {e}"))
            })?;
        if let (Some(version), Some(suite)) = (
            tls.get_ref().1.protocol_version(),
            tls.get_ref().1.negotiated_cipher_suite(),
        ) {
            tracing::debug!(upstream = %peer, "TLS up: {version:?} {:?}", suite.suite());
        }
        Ok(Conn {
            stream: Box::new(tls),
            buf,
            limit,
            quitting: false,
            peer,
            encrypted: true,
            local,
        })
    }

    /// Reads the next complete reply, within one step.
    pub async fn read_reply(&mut self) -> Result<Reply, SinkError> {
        self.read_reply_within(Duration::ZERO).await
    }

    /// Reads the next complete reply, within one step and `extra`.
    pub async fn read_reply_within(&mut self, extra: Duration) -> Result<Reply, SinkError> {
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
                Err(e) => {
                    return Err(SinkError::temporary(
                        "4.5.0",
                        format!("{} sent a malformed reply: {e}", self.peer),
                    ));
                }
            }
            let n = by_deadline(deadline, self.limit, self.stream.read(&mut chunk))
                .await
                .map_err(|e| self.io_error("reading a reply from", e))?;
            if n == 0 {
                return Err(SinkError::temporary(
                    "4.4.2",
                    format!("{} closed the connection", self.peer),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends bytes as they are (commands with their CRLF, or DATA content).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
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
    pub async fn command(&mut self, line: &str, shown: Option<&str>) -> Result<Reply, SinkError> {
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

    fn io_error(&self, doing: &str, e: io::Error) -> SinkError {
        SinkError::temporary("4.4.2", format!("{doing} {}: {e}", self.peer))
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

fn connect_error(peer: &str, e: io::Error) -> SinkError {
    let status = match e.kind() {
        io::ErrorKind::TimedOut => "4.4.2",
        io::ErrorKind::NotFound => "4.4.3",
        _ => "4.4.1",
    };
    SinkError::temporary(status, format!("connecting to {peer}: {e}"))
}

/// Runs `fut` until `deadline`; running out of time is an `io::ErrorKind::TimedOut` that
/// names the configured `limit`.
async fn by_deadline<T, E>(
    deadline: Instant,
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            Target::parse("127.0.0.1:25").unwrap(),
            Target::Tcp {
                host: "127.0.0.1".into(),
                port: 25
            }
        );
        assert_eq!(
            Target::parse("[::1]:24").unwrap().to_string(),
            "[::1]:24".to_string()
        );
        assert_eq!(Target::parse("[::1]:24").unwrap().host(), Some("::1"));
        assert_eq!(
            Target::parse("mx.example.org:587").unwrap().host(),
            Some("mx.example.org")
        );
        assert_eq!(
            Target::parse("unix:/run/dovecot/lmtp").unwrap(),
            Target::Unix("/run/dovecot/lmtp".into())
        );
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:99999",
            ":25",
            "::1:25",
            "[::1:25",
            "unix:relative/path",
            "a b:25",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
    }
}
