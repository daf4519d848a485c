//! The session, one step at a time: each step sends its command and returns the server's
//! reply as it came, so that a caller can judge it, log it or hand it on to its own client.
//! Only failures of the connection itself are errors ([`Error`]); after one the session is
//! broken, and [`Client::quit`] only drops it.

use super::conn::Conn;
use super::error::{Error, Result};
use super::target::Target;
use super::xforward::xforward_lines;
use crate::proto::{Capabilities, DotStuffer, RemoteReply};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Bytes read from the message file per write to the server.
const DATA_CHUNK: usize = 64 * 1024;

/// SMTP (RFC 5321) or LMTP (RFC 2033): which hello we send, and how many replies follow
/// the message (one, or one per accepted recipient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Smtp,
    Lmtp,
}

/// What MAIL FROM carries besides the address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailOptions {
    /// The message size; sent as SIZE= only to a server that advertises SIZE.
    pub size: Option<u64>,
    /// The BODY= value ("8BITMIME", "BINARYMIME"); the caller decides whether the server
    /// can take it.
    pub body: Option<&'static str>,
    /// Adds SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

/// A command of the transaction, for [`Client::pipeline`].
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    Mail(&'a str, &'a MailOptions),
    Rcpt(&'a str),
    Data,
}

/// How an AUTH attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The server's last reply of the exchange: 2xx = authenticated (235 per RFC 4954;
    /// any 2xx is taken), anything else = refused.
    Replied(RemoteReply),
    /// Not attempted: the connection is neither encrypted nor to this host, and the
    /// password would go in plain text.
    Unencrypted,
    /// Not attempted: the server offers no mechanism we speak (PLAIN, LOGIN); what it
    /// offers (empty when it offers no AUTH at all).
    NoMechanism { offered: Vec<String> },
}

/// What the DATA step got.
#[derive(Debug)]
pub enum DataReplies {
    /// DATA was answered with something other than 354: nothing was sent.
    Refused(RemoteReply),
    /// The message went; the replies to it.
    Sent(FinalReplies),
}

/// The replies after the message: one for SMTP, one per accepted recipient (in RCPT
/// order) for LMTP. A connection failure cuts them short: `replies` are those that came
/// before it. From the final "." on, the server may have the message even when its reply
/// never arrives.
#[derive(Debug)]
pub struct FinalReplies {
    pub replies: Vec<RemoteReply>,
    pub error: Option<Error>,
}

/// One client session over TCP or a Unix socket.
pub struct Client {
    conn: Conn,
    /// Set by the hello that was sent: LMTP answers the message once per recipient.
    dialect: Dialect,
    /// What the last EHLO/LHLO advertised; empty before it, after HELO and after STARTTLS.
    caps: Capabilities,
    /// An error left the connection in an unknown state: no more commands, not even QUIT.
    broken: bool,
    /// Bytes of message content sent since the last final reply: the first reply after
    /// the content gets time for them to drain (see [`in_transit_grace`]).
    in_transit: Option<u64>,
}

impl Client {
    /// Connects within `timeout`, which also bounds every later step: the TLS handshake,
    /// each whole reply (however slowly it trickles in), each write.
    pub async fn connect(target: &Target, timeout: Duration) -> Result<Client> {
        let conn = Conn::connect(target, timeout).await?;
        Ok(Client {
            conn,
            dialect: Dialect::Smtp,
            caps: Capabilities::default(),
            broken: false,
            in_transit: None,
        })
    }

    /// The TLS handshake: right after connecting for implicit TLS (SMTPS, RFC 8314), or
    /// after a 220 to STARTTLS. What was learnt in plain text is forgotten (RFC 3207).
    pub async fn start_tls(
        &mut self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<()> {
        let r = self.conn.start_tls(config, name).await;
        self.caps = Capabilities::default();
        self.track(r)
    }

    /// The server's greeting (220 = ready).
    pub async fn greeting(&mut self) -> Result<RemoteReply> {
        let r = self.conn.read_reply().await;
        self.track(r)
    }

    /// EHLO; a 250 sets the [`Self::capabilities`].
    pub async fn ehlo(&mut self, name: &str) -> Result<RemoteReply> {
        self.hello(Dialect::Smtp, "EHLO", name).await
    }

    /// LHLO (RFC 2033); a 250 sets the [`Self::capabilities`] and makes this an LMTP session.
    pub async fn lhlo(&mut self, name: &str) -> Result<RemoteReply> {
        self.hello(Dialect::Lmtp, "LHLO", name).await
    }

    /// HELO, for a server that refused EHLO: no capabilities.
    pub async fn helo(&mut self, name: &str) -> Result<RemoteReply> {
        self.caps = Capabilities::default();
        self.command(&format!("HELO {name}"), None).await
    }

    async fn hello(&mut self, dialect: Dialect, verb: &str, name: &str) -> Result<RemoteReply> {
        let reply = self.command(&format!("{verb} {name}"), None).await?;
        if reply.code == 250 {
            self.caps = Capabilities::from_ehlo(&reply);
            self.dialect = dialect;
        }
        Ok(reply)
    }

    /// What the last EHLO/LHLO advertised.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The server's address as given, for messages.
    pub fn peer(&self) -> &str {
        &self.conn.peer
    }

    /// TLS is up (implicit or after STARTTLS).
    pub fn is_encrypted(&self) -> bool {
        self.conn.encrypted
    }

    /// The server is this host (Unix socket or loopback).
    pub fn is_local(&self) -> bool {
        self.conn.local
    }

    /// No error has left the connection in an unknown state.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// STARTTLS (RFC 3207); on its 220 the handshake follows (a failed handshake is an
    /// error). Once TLS is up the capabilities are forgotten, as the RFC says: send EHLO or
    /// LHLO again. Any other reply leaves the session in plain text, as it was.
    pub async fn starttls(
        &mut self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<RemoteReply> {
        let reply = self.starttls_request().await?;
        if reply.code == 220 {
            self.start_tls(config, name).await?;
        }
        Ok(reply)
    }

    /// [`Client::starttls`] in two steps, for a caller that acts on the reply before the
    /// handshake (logs it, say, so a handshake that fails is seen after its 220): sends
    /// STARTTLS and returns the reply; on 220, [`Client::start_tls`] is next.
    pub async fn starttls_request(&mut self) -> Result<RemoteReply> {
        self.command("STARTTLS", None).await
    }

    /// AUTH PLAIN, else AUTH LOGIN, whichever the server offers first in that order. The
    /// password goes only over TLS or to this host.
    pub async fn auth(&mut self, username: &str, password: &str) -> Result<Auth> {
        use base64::Engine as _;
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        if !self.conn.encrypted && !self.conn.local {
            return Ok(Auth::Unencrypted);
        }
        if self.caps.has_param("AUTH", "PLAIN") {
            let token = b64(format!("\0{username}\0{password}").as_bytes());
            let reply = self
                .command(&format!("AUTH PLAIN {token}"), Some("AUTH PLAIN <secret>"))
                .await?;
            return Ok(Auth::Replied(reply));
        }
        if self.caps.has_param("AUTH", "LOGIN") {
            let mut reply = self.command("AUTH LOGIN", None).await?;
            for (secret, shown) in [
                (username.as_bytes(), "<username>"),
                (password.as_bytes(), "<password>"),
            ] {
                if reply.code != 334 {
                    return Ok(Auth::Replied(reply));
                }
                reply = self.command(&b64(secret), Some(shown)).await?;
            }
            return Ok(Auth::Replied(reply));
        }
        let offered = self.caps.params("AUTH").unwrap_or_default().to_vec();
        Ok(Auth::NoMechanism { offered })
    }

    /// XFORWARD (Postfix's XFORWARD_README) with those of `attributes` the server
    /// advertised in its XFORWARD capability, in lines of at most 512 bytes. Returns the
    /// first reply that is not 250, else the last one; `None` when nothing was sent (no
    /// XFORWARD capability, or none of the attributes advertised).
    pub async fn xforward(
        &mut self,
        attributes: &[(&'static str, String)],
    ) -> Result<Option<RemoteReply>> {
        let mut last = None;
        for line in xforward_lines(&self.caps, attributes) {
            let reply = self.command(&line, None).await?;
            let refused = reply.code != 250;
            last = Some(reply);
            if refused {
                break;
            }
        }
        Ok(last)
    }

    /// MAIL FROM.
    pub async fn mail(&mut self, from: &str, options: &MailOptions) -> Result<RemoteReply> {
        self.mail_with(from, options, &[]).await
    }

    /// MAIL FROM with further parameters (`RET=HDRS`, `ENVID=…` of DSN, RFC 3461), sent as
    /// given: the caller checks that the server advertised their extension.
    pub async fn mail_with(
        &mut self,
        from: &str,
        options: &MailOptions,
        params: &[String],
    ) -> Result<RemoteReply> {
        let mut line = self.mail_line(from, options)?;
        push_params(&mut line, "MAIL", params)?;
        self.command(&line, None).await
    }

    /// One RCPT TO, and its reply.
    pub async fn rcpt(&mut self, to: &str) -> Result<RemoteReply> {
        self.rcpt_with(to, &[]).await
    }

    /// RCPT TO with further parameters (`NOTIFY=…`), as [`Self::mail_with`].
    pub async fn rcpt_with(&mut self, to: &str, params: &[String]) -> Result<RemoteReply> {
        let mut line = rcpt_line(to)?;
        push_params(&mut line, "RCPT", params)?;
        self.command(&line, None).await
    }

    /// Sends several commands in one write (PIPELINING, RFC 2920, when the server offers
    /// it); read their replies in order with [`Self::read_reply`].
    pub async fn pipeline(&mut self, requests: &[Request<'_>]) -> Result<()> {
        let mut batch = String::new();
        for request in requests {
            let line = match request {
                Request::Mail(from, options) => self.mail_line(from, options)?,
                Request::Rcpt(to) => rcpt_line(to)?,
                Request::Data => "DATA".to_string(),
            };
            tracing::trace!(upstream = %self.conn.peer, "C: {line}");
            batch.push_str(&line);
            batch.push_str("\r\n");
        }
        let r = self.conn.send(batch.as_bytes()).await;
        self.track(r)
    }

    /// The next reply (after [`Self::pipeline`]).
    pub async fn read_reply(&mut self) -> Result<RemoteReply> {
        let r = self.conn.read_reply().await;
        self.track(r)
    }

    /// The whole DATA step for `accepted` recipients: the DATA command, and on its 354 the
    /// message file (line ends made CRLF, dot-stuffed, then the final "."), then the
    /// replies to it (see [`FinalReplies`]).
    pub async fn data(&mut self, message: &Path, accepted: usize) -> Result<DataReplies> {
        let reply = self.data_command().await?;
        if reply.code != 354 {
            return Ok(DataReplies::Refused(reply));
        }
        self.send_data_content(message).await?;
        Ok(DataReplies::Sent(self.final_replies(accepted).await))
    }

    /// [`Self::data`] for a message held in memory (`sendmail`'s, read from its standard
    /// input): line ends made CRLF, dot-stuffed, the final ".", then the replies.
    pub async fn data_bytes(&mut self, message: &[u8], accepted: usize) -> Result<DataReplies> {
        let reply = self.data_command().await?;
        if reply.code != 354 {
            return Ok(DataReplies::Refused(reply));
        }
        let mut stuffer = DotStuffer::new();
        let mut output = Vec::with_capacity(message.len() + message.len() / 32 + 8);
        stuffer.encode(message, &mut output);
        output.extend_from_slice(stuffer.finish());
        let r = self.conn.send(&output).await;
        self.track(r)?;
        self.in_transit = Some(output.len() as u64);
        Ok(DataReplies::Sent(self.final_replies(accepted).await))
    }

    /// BDAT (RFC 3030) for `accepted` recipients: the whole message file of `size` bytes
    /// as one `BDAT <size> LAST` chunk, its bytes as they are, then the replies to it. One
    /// chunk because the size is known and every chunk costs a reply.
    pub async fn bdat(
        &mut self,
        message: &Path,
        size: u64,
        accepted: usize,
    ) -> Result<FinalReplies> {
        self.send_bdat_last(message, size).await?;
        Ok(self.final_replies(accepted).await)
    }

    /// The DATA command alone (354 = send the content).
    pub async fn data_command(&mut self) -> Result<RemoteReply> {
        self.command("DATA", None).await
    }

    /// Streams the message file after a 354: line ends made CRLF, dot-stuffed, and the
    /// final ".". Read the replies with [`Self::final_reply`].
    pub async fn send_data_content(&mut self, message: &Path) -> Result<()> {
        let r = self.data_content(message).await;
        self.track(r)
    }

    async fn data_content(&mut self, message: &Path) -> Result<()> {
        let spool_error = |source| Error::Message {
            path: message.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::open(message).await.map_err(spool_error)?;
        let mut stuffer = DotStuffer::new();
        let mut input = vec![0u8; DATA_CHUNK];
        let mut output = Vec::with_capacity(DATA_CHUNK + DATA_CHUNK / 32);
        let mut sent = 0u64;
        loop {
            // A file read error leaves the server mid-DATA; dropping the connection
            // without the final "." makes it discard what it got.
            let got = file.read(&mut input).await.map_err(spool_error)?;
            if got == 0 {
                break;
            }
            output.clear();
            stuffer.encode(&input[..got], &mut output);
            self.conn.send(&output).await?;
            sent += output.len() as u64;
        }
        let end = stuffer.finish();
        self.conn.send(end).await?;
        self.in_transit = Some(sent + end.len() as u64);
        Ok(())
    }

    /// Sends `BDAT <size> LAST` and the message file's bytes as they are. Read the replies
    /// with [`Self::final_reply`].
    pub async fn send_bdat_last(&mut self, message: &Path, size: u64) -> Result<()> {
        let r = self.bdat_content(message, size).await;
        self.track(r)
    }

    async fn bdat_content(&mut self, message: &Path, size: u64) -> Result<()> {
        let spool_error = |source| Error::Message {
            path: message.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::open(message).await.map_err(spool_error)?;
        self.conn
            .send(format!("BDAT {size} LAST\r\n").as_bytes())
            .await?;
        let mut input = vec![0u8; DATA_CHUNK];
        let mut left = size;
        loop {
            let got = file.read(&mut input).await.map_err(spool_error)?;
            // A count that does not match would make the server read message bytes as
            // commands, or commands as message bytes. Dropping the connection mid-chunk
            // makes it discard what it got.
            if got as u64 > left || (got == 0 && left > 0) {
                return Err(Error::MessageChanged {
                    path: message.to_path_buf(),
                });
            }
            if got == 0 {
                self.in_transit = Some(size);
                return Ok(());
            }
            self.conn.send(&input[..got]).await?;
            left -= got as u64;
        }
    }

    /// The replies to the message just sent: one for SMTP, `accepted` for LMTP.
    pub async fn final_replies(&mut self, accepted: usize) -> FinalReplies {
        let n = match self.dialect {
            Dialect::Smtp => 1,
            Dialect::Lmtp => accepted,
        };
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            match self.final_reply().await {
                Ok(r) => replies.push(r),
                Err(e) => {
                    return FinalReplies {
                        replies,
                        error: Some(e),
                    };
                }
            }
        }
        FinalReplies {
            replies,
            error: None,
        }
    }

    /// One reply to the message just sent. The first gets the step timeout plus time for
    /// the content still in transit ([`in_transit_grace`]).
    pub async fn final_reply(&mut self) -> Result<RemoteReply> {
        let grace = self
            .in_transit
            .take()
            .map_or(Duration::ZERO, in_transit_grace);
        let r = self.conn.read_reply_within(grace).await;
        self.track(r)
    }

    /// After a 354 with no recipient accepted (a pipelined DATA whose RCPTs were all
    /// refused): an empty message, which such a server still waits for, and its reply.
    pub async fn finish_empty_data(&mut self) -> Result<RemoteReply> {
        let r = self.conn.send(b".\r\n").await;
        self.track(r)?;
        self.read_reply().await
    }

    /// RSET: abandons the transaction, keeps the session.
    pub async fn rset(&mut self) -> Result<RemoteReply> {
        self.command("RSET", None).await
    }

    /// QUIT, bounded by the step timeout (at most 10 s): the answer does not matter any
    /// more. A broken session is only dropped.
    pub async fn quit(self) {
        if !self.broken {
            self.conn.quit().await;
        }
    }

    /// Sends one command line and reads its reply; `shown` replaces the line in logs.
    async fn command(&mut self, line: &str, shown: Option<&str>) -> Result<RemoteReply> {
        let r = self.conn.command(line, shown).await;
        self.track(r)
    }

    fn mail_line(&self, from: &str, options: &MailOptions) -> Result<String> {
        if !sendable(from) {
            return Err(Error::Unsendable {
                verb: "MAIL",
                address: from.to_string(),
            });
        }
        let mut line = format!("MAIL FROM:<{from}>");
        if let Some(size) = options.size
            && self.caps.has("SIZE")
        {
            line.push_str(&format!(" SIZE={size}"));
        }
        if let Some(body) = options.body {
            line.push_str(&format!(" BODY={body}"));
        }
        if options.smtputf8 {
            line.push_str(" SMTPUTF8");
        }
        Ok(line)
    }

    /// Marks the session broken on an error that leaves the connection in an unknown state.
    fn track<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r
            && !e.session_usable()
        {
            self.broken = true;
        }
        r
    }
}

/// Appends ` PARAM` each; one that would end the line (or hold a space, and so be two) is
/// refused, as an address would be.
fn push_params(line: &mut String, verb: &'static str, params: &[String]) -> Result<()> {
    for p in params {
        if p.is_empty() || !sendable(p) || p.contains(' ') {
            return Err(Error::Unsendable {
                verb,
                address: p.clone(),
            });
        }
        line.push(' ');
        line.push_str(p);
    }
    Ok(())
}

fn rcpt_line(to: &str) -> Result<String> {
    if !sendable(to) {
        return Err(Error::Unsendable {
            verb: "RCPT",
            address: to.to_string(),
        });
    }
    Ok(format!("RCPT TO:<{to}>"))
}

/// An address goes on a command line: it must not end the line (which would let it
/// smuggle a command of its own).
pub fn sendable(address: &str) -> bool {
    !address.contains(['\r', '\n', '\0'])
}

/// Our last write of the content returns while megabytes may still sit in socket buffers
/// on their way to the server: the reply to the end of the message is given time for the
/// server to read that much at a slow 64 KiB/s, on top of the usual step timeout.
fn in_transit_grace(size: u64) -> Duration {
    Duration::from_secs(size / (64 * 1024))
}
