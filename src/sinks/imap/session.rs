//! One IMAP connection: bytes to and from the server through [`super::wire`], every step
//! bounded by a timeout, and the commands the sink uses — greeting, CAPABILITY, STARTTLS,
//! login (AUTHENTICATE PLAIN / CRAM-MD5, LOGIN), APPEND, CREATE, SUBSCRIBE, EXAMINE, LOGOUT.
//!
//! Literals are always synchronizing (`{N}`, wait for `+`), even when the server offers
//! LITERAL+: the server can then refuse an APPEND (`[TRYCREATE]`, `[TOOBIG]`,
//! `[OVERQUOTA]`) before the message crosses the wire, and — what matters more — a
//! connection that died while idle in the pool shows it before any byte of the message is
//! sent, so that the delivery can be retried on a fresh connection with no risk of a
//! second copy.

use super::config::{AuthMode, ImapSettings, ImapTls};
use super::wire::{
    Capabilities, Command, CommandBuilder, Kind, Response, Status, WireError, cram_md5,
    parse_response, sasl_plain,
};
use crate::smtp_client::Io;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// LOGOUT is a courtesy: it may not hold the caller long.
const LOGOUT_MAX: Duration = Duration::from_secs(5);

/// What went wrong with a connection or a command. After any but `Refused` the connection
/// is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("{peer}: cannot connect: {source}")]
    Connect { peer: String, source: io::Error },
    #[error("{peer}: TLS handshake failed: {source}")]
    Tls { peer: String, source: io::Error },
    #[error("{peer}: {doing}: {source}")]
    Io {
        peer: String,
        doing: &'static str,
        source: io::Error,
    },
    #[error("{peer}: the server closed the connection while {doing}")]
    Closed { peer: String, doing: &'static str },
    #[error("{peer}: {source}")]
    Wire { peer: String, source: WireError },
    #[error("{peer}: the server said BYE: {text}")]
    Bye { peer: String, text: String },
    /// A tagged NO or BAD: the connection is still fine.
    #[error("{peer} answered {command} with {}", status.show())]
    Refused {
        peer: String,
        command: &'static str,
        status: Status,
    },
    /// The server cannot do what the config asks (no STARTTLS, no usable login mechanism).
    #[error("{peer}: {message}")]
    Unusable { peer: String, message: String },
}

/// What a command ended with when it succeeded.
pub struct Done {
    /// The tagged OK.
    pub status: Status,
    /// Untagged responses that came before it.
    pub untagged: Vec<Response>,
}

/// Whether an APPEND had started sending the message when it failed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    /// Set before the first byte of a literal is written: from then on the server may
    /// have the message (only in the instant after the last byte), so retrying could
    /// store it twice.
    pub literal_sent: bool,
}

pub struct Session {
    stream: Box<dyn Io>,
    /// Bytes received but not yet framed into a response.
    buf: Vec<u8>,
    next_tag: u32,
    /// What the server offers now (after TLS and login, as it last said).
    pub caps: Capabilities,
    /// `host:port`, for every message.
    peer: String,
    command_timeout: Duration,
    /// When it last finished a command: the pool drops sessions idle too long.
    pub last_used: Instant,
}

impl Session {
    /// Connects, greets, starts TLS as configured and logs in.
    pub async fn open(s: &ImapSettings) -> Result<Session, ImapError> {
        let peer = s.peer();
        let tcp = within(s.connect_timeout, connect_tcp(&s.host, s.port))
            .await
            .map_err(|source| ImapError::Connect {
                peer: peer.clone(),
                source,
            })?;
        // Commands are written whole; Nagle would only add delay between them.
        let _ = tcp.set_nodelay(true);
        let mut session = Session {
            stream: Box::new(tcp),
            buf: Vec::with_capacity(4096),
            next_tag: 1,
            caps: Capabilities::default(),
            peer,
            command_timeout: s.command_timeout,
            last_used: Instant::now(),
        };
        if s.tls == ImapTls::Implicit {
            session.start_tls(s).await?;
        }
        let greeting = session.greeting(s.connect_timeout).await?;
        let preauth = greeting.kind == Kind::Preauth;
        session.caps = greeting.capabilities().unwrap_or_default();
        if s.tls == ImapTls::Starttls {
            if preauth {
                // Logged in before TLS: a STARTTLS can no longer come (RFC 3501 6.2.1), and
                // a man in the middle may have put this greeting there.
                return Err(session.unusable(
                    "greeted PREAUTH on the plain connection, so STARTTLS is impossible; refusing (tls = \"starttls\")",
                ));
            }
            session.ensure_capabilities().await?;
            if !session.caps.has("STARTTLS") {
                return Err(
                    session.unusable("does not offer STARTTLS and tls = \"starttls\" requires it")
                );
            }
            let tag = session.tag();
            session
                .run(
                    CommandBuilder::new(&tag, "STARTTLS").build(),
                    "STARTTLS",
                    None,
                    Duration::ZERO,
                    &mut Progress::default(),
                )
                .await?;
            session.start_tls(s).await?;
            // What was said before TLS could have been forged (RFC 3501 6.2.1).
            session.caps = Capabilities::default();
        }
        if !preauth {
            session.ensure_capabilities().await?;
            let ok = session.login(s).await?;
            session.caps = ok.capabilities().unwrap_or_default();
        }
        session.ensure_capabilities().await?;
        Ok(session)
    }

    async fn start_tls(&mut self, s: &ImapSettings) -> Result<(), ImapError> {
        let Some(config) = s.tls_config.clone() else {
            return Err(self.unusable("TLS asked for with no TLS settings"));
        };
        if !self.buf.is_empty() {
            // Bytes that came before the handshake were sent in plain text and could be
            // injected (RFC 3501 6.2.1 / the STARTTLS command injection class of bugs).
            return Err(self.unusable("sent data before the TLS handshake; refusing"));
        }
        let placeholder = Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink()));
        let plain = std::mem::replace(&mut self.stream, placeholder);
        let handshake = TlsConnector::from(config).connect(s.server_name.clone(), plain);
        let tls = within(s.connect_timeout, handshake)
            .await
            .map_err(|source| ImapError::Tls {
                peer: self.peer.clone(),
                source,
            })?;
        self.stream = Box::new(tls);
        Ok(())
    }

    /// The server's first response: OK or PREAUTH goes on; BYE or anything else is refused.
    async fn greeting(&mut self, limit: Duration) -> Result<Status, ImapError> {
        match self.read(limit, "waiting for the greeting").await? {
            Response::Status(st) if matches!(st.kind, Kind::Ok | Kind::Preauth) => Ok(st),
            Response::Status(st) if st.kind == Kind::Bye => Err(ImapError::Bye {
                peer: self.peer.clone(),
                text: st.show(),
            }),
            other => Err(self.unusable(format!("greeted with {other:?}, not * OK"))),
        }
    }

    /// Asks CAPABILITY unless the server already said what it offers.
    async fn ensure_capabilities(&mut self) -> Result<(), ImapError> {
        if !self.caps.is_empty() {
            return Ok(());
        }
        let tag = self.tag();
        let done = self
            .run(
                CommandBuilder::new(&tag, "CAPABILITY").build(),
                "CAPABILITY",
                None,
                Duration::ZERO,
                &mut Progress::default(),
            )
            .await?;
        for r in done.untagged {
            if let Response::Capability(c) = r {
                self.caps = c;
            }
        }
        if let Some(c) = done.status.capabilities() {
            self.caps = c;
        }
        Ok(())
    }

    /// Logs in as the config says; returns the tagged OK (it may carry the capabilities).
    async fn login(&mut self, s: &ImapSettings) -> Result<Status, ImapError> {
        let plain = self.caps.auth("PLAIN");
        let cram = self.caps.auth("CRAM-MD5");
        let login_ok = !self.caps.has("LOGINDISABLED");
        let mode = match s.auth {
            AuthMode::Auto if plain => AuthMode::Plain,
            AuthMode::Auto if login_ok => AuthMode::Login,
            AuthMode::Auto if cram => AuthMode::CramMd5,
            AuthMode::Auto => {
                return Err(self.unusable(
                    "offers no way to log in that mailchute has (AUTH=PLAIN, LOGIN, AUTH=CRAM-MD5)",
                ));
            }
            AuthMode::Plain if !plain => {
                return Err(self.unusable("does not offer AUTH=PLAIN and auth = \"plain\""));
            }
            AuthMode::CramMd5 if !cram => {
                return Err(self.unusable("does not offer AUTH=CRAM-MD5 and auth = \"cram-md5\""));
            }
            AuthMode::Login if !login_ok => {
                return Err(self.unusable(
                    "refuses the LOGIN command here (LOGINDISABLED; without TLS?) and auth = \"login\"",
                ));
            }
            m => m,
        };
        let tag = self.tag();
        let mut progress = Progress::default();
        let done = match mode {
            AuthMode::Plain => {
                let token = sasl_plain(&s.username, &s.password);
                if self.caps.has("SASL-IR") {
                    let line = CommandBuilder::new(&tag, "AUTHENTICATE PLAIN")
                        .atom(&token)
                        .build();
                    self.run(
                        line,
                        "AUTHENTICATE PLAIN",
                        Some("AUTHENTICATE PLAIN <secret>"),
                        Duration::ZERO,
                        &mut progress,
                    )
                    .await?
                } else {
                    let mut once = Some(token);
                    let line = CommandBuilder::new(&tag, "AUTHENTICATE PLAIN").build();
                    self.exchange(line.pieces.concat(), "AUTHENTICATE PLAIN", |_| {
                        once.take().map(|t| format!("{t}\r\n").into_bytes())
                    })
                    .await?
                }
            }
            AuthMode::CramMd5 => {
                let line = CommandBuilder::new(&tag, "AUTHENTICATE CRAM-MD5").build();
                let (user, password) = (s.username.clone(), s.password.clone());
                let mut answered = false;
                self.exchange(line.pieces.concat(), "AUTHENTICATE CRAM-MD5", |challenge| {
                    if std::mem::replace(&mut answered, true) {
                        return None;
                    }
                    // A challenge that is not base64: cancel (RFC 3501 6.2.2), which ends
                    // in a tagged BAD the caller reports.
                    Some(
                        cram_md5(&user, &password, challenge)
                            .map(|r| format!("{r}\r\n"))
                            .unwrap_or_else(|| "*\r\n".into())
                            .into_bytes(),
                    )
                })
                .await?
            }
            AuthMode::Login | AuthMode::Auto => {
                let cmd = CommandBuilder::new(&tag, "LOGIN")
                    .string(s.username.as_bytes())
                    .string(s.password.as_bytes())
                    .build();
                self.run(
                    cmd,
                    "LOGIN",
                    Some("LOGIN <user> <secret>"),
                    Duration::ZERO,
                    &mut progress,
                )
                .await?
            }
        };
        Ok(done.status)
    }

    /// APPEND `message` (CRLF lines) to `mailbox` with `flags` and `date`.
    pub async fn append(
        &mut self,
        mailbox: &str,
        flags: &[String],
        date: Option<&str>,
        message: &[u8],
        progress: &mut Progress,
    ) -> Result<Done, ImapError> {
        let tag = self.tag();
        let mut b = CommandBuilder::new(&tag, "APPEND").string(mailbox.as_bytes());
        if !flags.is_empty() {
            b = b.atom(&format!("({})", flags.join(" ")));
        }
        if let Some(d) = date {
            b = b.string(d.as_bytes());
        }
        let cmd = b.literal(message).build();
        // The server may still be writing the message out when the literal's last byte
        // is in: one more second per 64 KiB, as the relay sink gives the end of DATA.
        let extra = Duration::from_secs(message.len() as u64 / (64 * 1024));
        self.run(cmd, "APPEND", None, extra, progress).await
    }

    /// A command on the mailbox: CREATE, SUBSCRIBE, EXAMINE.
    pub async fn mailbox_command(
        &mut self,
        verb: &'static str,
        mailbox: &str,
    ) -> Result<Done, ImapError> {
        let tag = self.tag();
        let cmd = CommandBuilder::new(&tag, verb)
            .string(mailbox.as_bytes())
            .build();
        self.run(cmd, verb, None, Duration::ZERO, &mut Progress::default())
            .await
    }

    /// Whether LIST finds `mailbox` (no wildcards in it: the config refuses `*` and `%`).
    pub async fn exists(&mut self, mailbox: &str) -> Result<bool, ImapError> {
        let tag = self.tag();
        let cmd = CommandBuilder::new(&tag, "LIST")
            .string(b"")
            .string(mailbox.as_bytes())
            .build();
        let done = self
            .run(cmd, "LIST", None, Duration::ZERO, &mut Progress::default())
            .await?;
        Ok(done.untagged.iter().any(|r| {
            matches!(r, Response::Data(d) if d.len() > 5 && d[..5].eq_ignore_ascii_case("LIST "))
        }))
    }

    /// Says goodbye; the answer does not matter.
    pub async fn logout(mut self) {
        self.command_timeout = self.command_timeout.min(LOGOUT_MAX);
        let tag = self.tag();
        let cmd = CommandBuilder::new(&tag, "LOGOUT").build();
        let _ = self
            .run(
                cmd,
                "LOGOUT",
                None,
                Duration::ZERO,
                &mut Progress::default(),
            )
            .await;
        let _ = within(LOGOUT_MAX, self.stream.shutdown()).await;
    }

    fn tag(&mut self) -> String {
        let t = format!("M{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    /// Sends `cmd` (each piece after a `+`) and reads to its tagged response.
    async fn run(
        &mut self,
        cmd: Command,
        what: &'static str,
        shown: Option<&str>,
        extra: Duration,
        progress: &mut Progress,
    ) -> Result<Done, ImapError> {
        let mut pieces = cmd.pieces.into_iter();
        let first = pieces.next().unwrap_or_default();
        match shown {
            Some(s) => tracing::trace!(server = %self.peer, "C: {s}"),
            None => {
                tracing::trace!(server = %self.peer, "C: {}", String::from_utf8_lossy(first.trim_ascii_end()))
            }
        }
        let mut rest: Vec<Vec<u8>> = pieces.rev().collect();
        self.exchange_inner(first, what, extra, |_| {
            let next = rest.pop();
            if next.is_some() {
                // Before the first byte of it is written.
                progress.literal_sent = true;
            }
            next
        })
        .await
    }

    /// Sends `first`, then for each `+` what `next` gives for its text, up to the tagged
    /// response. `next` returning `None` means the server asked for more than we have.
    async fn exchange(
        &mut self,
        first: Vec<u8>,
        what: &'static str,
        next: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Done, ImapError> {
        tracing::trace!(server = %self.peer, "C: {what}");
        self.exchange_inner(first, what, Duration::ZERO, next).await
    }

    async fn exchange_inner(
        &mut self,
        first: Vec<u8>,
        what: &'static str,
        extra: Duration,
        mut next: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Done, ImapError> {
        let tag = first
            .split(|&b| b == b' ')
            .next()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default();
        self.write(&first, what).await?;
        let mut untagged = Vec::new();
        let mut bye: Option<String> = None;
        loop {
            let r = match self.read(self.command_timeout + extra, what).await {
                Ok(r) => r,
                Err(ImapError::Closed { .. }) if bye.is_some() => {
                    return Err(ImapError::Bye {
                        peer: self.peer.clone(),
                        text: bye.unwrap_or_default(),
                    });
                }
                Err(e) => return Err(e),
            };
            match r {
                Response::Continue(text) => match next(&text) {
                    Some(bytes) => {
                        tracing::trace!(server = %self.peer, "C: <{} bytes>", bytes.len());
                        self.write(&bytes, what).await?;
                    }
                    None => {
                        return Err(self.unusable(format!(
                            "asked for more of {what} than there is (+ {text})"
                        )));
                    }
                },
                Response::Tagged { tag: t, status } if t == tag => {
                    self.last_used = Instant::now();
                    return if status.kind == Kind::Ok {
                        Ok(Done { status, untagged })
                    } else {
                        Err(ImapError::Refused {
                            peer: self.peer.clone(),
                            command: what,
                            status,
                        })
                    };
                }
                Response::Tagged { tag: t, status } => {
                    return Err(self.unusable(format!(
                        "answered tag {t} ({}) while {tag} was pending",
                        status.show()
                    )));
                }
                Response::Status(st) if st.kind == Kind::Bye => {
                    // The connection closes next; say why when it does.
                    bye = Some(st.show());
                }
                other => untagged.push(other),
            }
        }
    }

    /// The next whole response, within `limit`.
    async fn read(&mut self, limit: Duration, doing: &'static str) -> Result<Response, ImapError> {
        let deadline = Instant::now() + limit;
        let mut chunk = [0u8; 8192];
        loop {
            match parse_response(&self.buf) {
                Ok(Some((r, used))) => {
                    self.buf.drain(..used);
                    tracing::trace!(server = %self.peer, "S: {r:?}");
                    return Ok(r);
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(ImapError::Wire {
                        peer: self.peer.clone(),
                        source,
                    });
                }
            }
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                Ok(Err(source)) => return Err(self.io(doing, source)),
                Err(_) => return Err(self.io(doing, timed_out(limit))),
            };
            if n == 0 {
                return Err(ImapError::Closed {
                    peer: self.peer.clone(),
                    doing,
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn write(&mut self, bytes: &[u8], doing: &'static str) -> Result<(), ImapError> {
        let limit = self.command_timeout;
        let stream = &mut self.stream;
        let result = within(limit, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await;
        result.map_err(|e| self.io(doing, e))
    }

    fn io(&self, doing: &'static str, source: io::Error) -> ImapError {
        ImapError::Io {
            peer: self.peer.clone(),
            doing,
            source,
        }
    }

    fn unusable(&self, message: impl Into<String>) -> ImapError {
        ImapError::Unusable {
            peer: self.peer.clone(),
            message: message.into(),
        }
    }
}

fn timed_out(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no answer within {} s", limit.as_secs_f64()),
    )
}

/// `fut` within `limit`; running out of time is an `io::ErrorKind::TimedOut`.
async fn within<T, E: Into<io::Error>>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(timed_out(limit)),
    }
}

async fn connect_tcp(host: &str, port: u16) -> io::Result<tokio::net::TcpStream> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return tokio::net::TcpStream::connect((ip, port)).await;
    }
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot resolve {host}: {e}"),
            )
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}
