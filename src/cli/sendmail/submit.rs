//! The message to the daemon: LMTP over its unix socket, so that each recipient's real
//! outcome comes back (RFC 2033: one reply per recipient after the data).

use crate::proto::RemoteReply;
use crate::proto::sendmail_argv::{BodyType, Notify, Ret};
use crate::smtp_client::{Client, DataReplies, MailOptions, Target};
use std::path::Path;
use std::time::Duration;

/// Bounds connecting and each step (a daemon that hangs is a daemon that is not there:
/// the message goes to pickup/).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// What the submission carries besides the message.
pub struct Submission<'a> {
    pub hostname: &'a str,
    pub from: &'a str,
    pub rcpts: &'a [String],
    pub body: Option<BodyType>,
    pub eight_bit: bool,
    pub notify: Option<Notify>,
    pub ret: Option<Ret>,
    pub envid: Option<&'a str>,
    pub verbose: bool,
}

/// One recipient's outcome.
#[derive(Debug)]
pub enum Outcome {
    Delivered,
    /// 4xx, or no answer: the daemon does not have it for this recipient (or may not).
    Deferred(String),
    /// 5xx: the reply.
    Rejected(RemoteReply),
}

/// Why the daemon could not be asked at all: the message goes to pickup/ whole.
#[derive(Debug)]
pub struct Unreachable(pub String);

/// Connects to the daemon's socket and says LHLO: a session ready for MAIL, or why the
/// daemon cannot be asked.
pub async fn open(socket: &Path, hostname: &str) -> Result<Client, Unreachable> {
    let target = Target::Unix(socket.to_path_buf());
    let fail = |e: crate::smtp_client::Error| Unreachable(e.to_string());
    let mut c = Client::connect(&target, STEP_TIMEOUT).await.map_err(fail)?;
    let greeting = c.greeting().await.map_err(fail)?;
    if greeting.code != 220 {
        return Err(Unreachable(format!(
            "{target} greeted with {}",
            greeting.one_line()
        )));
    }
    let hello = c.lhlo(hostname).await.map_err(fail)?;
    if hello.code != 250 {
        c.quit().await;
        return Err(Unreachable(format!(
            "{target} answered LHLO with {}",
            hello.one_line()
        )));
    }
    Ok(c)
}

/// Runs the transaction; one outcome per recipient, in order.
pub async fn submit(
    socket: &Path,
    s: &Submission<'_>,
    message: &[u8],
) -> Result<Vec<Outcome>, Unreachable> {
    let fail = |e: crate::smtp_client::Error| Unreachable(e.to_string());
    let mut c = open(socket, s.hostname).await?;
    let caps = c.capabilities().clone();
    let dsn = caps.has("DSN");
    let options = MailOptions {
        size: Some(message.len() as u64),
        body: match s.body {
            Some(BodyType::EightBitMime) if caps.has("8BITMIME") => Some("8BITMIME"),
            Some(BodyType::SevenBit) => Some("7BIT"),
            None if s.eight_bit && caps.has("8BITMIME") => Some("8BITMIME"),
            _ => None,
        },
        smtputf8: caps.has("SMTPUTF8")
            && (!s.from.is_ascii() || s.rcpts.iter().any(|r| !r.is_ascii())),
    };
    let mut mail_params = Vec::new();
    if dsn {
        if let Some(r) = s.ret {
            mail_params.push(match r {
                Ret::Full => "RET=FULL".to_string(),
                Ret::Headers => "RET=HDRS".to_string(),
            });
        }
        if let Some(id) = s.envid {
            mail_params.push(format!("ENVID={}", crate::proto::xtext(id)));
        }
    } else if s.verbose && (s.ret.is_some() || s.envid.is_some() || s.notify.is_some()) {
        eprintln!("sendmail: the daemon does not offer DSN: -N, -R and -V are not passed on");
    }
    let mail = c
        .mail_with(s.from, &options, &mail_params)
        .await
        .map_err(fail)?;
    if !mail.is_positive() {
        c.quit().await;
        return Ok(s.rcpts.iter().map(|_| judge(&mail)).collect());
    }
    let rcpt_params: Vec<String> = match (dsn, s.notify) {
        (true, Some(n)) => vec![notify_param(n)],
        _ => Vec::new(),
    };
    let mut outcomes = Vec::with_capacity(s.rcpts.len());
    let mut accepted = Vec::new();
    for (i, r) in s.rcpts.iter().enumerate() {
        let reply = c.rcpt_with(r, &rcpt_params).await.map_err(fail)?;
        if reply.is_positive() {
            accepted.push(i);
            outcomes.push(Outcome::Delivered);
        } else {
            outcomes.push(judge(&reply));
        }
    }
    if accepted.is_empty() {
        c.quit().await;
        return Ok(outcomes);
    }
    // From here on the daemon may have the message even when the connection fails: a
    // recipient without its reply is deferred (to pickup/, at worst a duplicate; never lost).
    match c.data_bytes(message, accepted.len()).await {
        Err(e) => {
            for &i in &accepted {
                outcomes[i] = Outcome::Deferred(e.to_string());
            }
        }
        Ok(DataReplies::Refused(reply)) => {
            for &i in &accepted {
                outcomes[i] = judge(&reply);
            }
        }
        Ok(DataReplies::Sent(finals)) => {
            for (n, &i) in accepted.iter().enumerate() {
                outcomes[i] = match finals.replies.get(n) {
                    Some(r) if r.is_positive() => Outcome::Delivered,
                    Some(r) => judge(r),
                    None => Outcome::Deferred(
                        finals
                            .error
                            .as_ref()
                            .map_or("no reply".into(), |e| e.to_string()),
                    ),
                };
            }
        }
    }
    c.quit().await;
    Ok(outcomes)
}

/// A reply's outcome: 5xx refused, anything else not positive deferred.
pub fn judge(reply: &RemoteReply) -> Outcome {
    if reply.code >= 500 {
        Outcome::Rejected(reply.clone())
    } else {
        Outcome::Deferred(reply.one_line())
    }
}

fn notify_param(n: Notify) -> String {
    if n.never {
        return "NOTIFY=NEVER".into();
    }
    let words: Vec<&str> = [
        (n.success, "SUCCESS"),
        (n.failure, "FAILURE"),
        (n.delay, "DELAY"),
    ]
    .into_iter()
    .filter_map(|(on, w)| on.then_some(w))
    .collect();
    format!("NOTIFY={}", words.join(","))
}
