//! `ses`: sends each message through Amazon SES v2 (SendEmail with the raw message), as
//! aws-smtp-relay did, with the machine's AWS credentials (an IAM role on EC2/ECS/EKS).
//!
//! The envelope decides who gets the mail (`FromEmailAddress` = MAIL FROM, destinations =
//! the recipients, 50 per send), never the headers. `X-SES-*` header fields set the
//! configuration set, tags and authorisation ARNs of their message and are removed from
//! what is sent. The API needs the whole message, so it is read once into memory, bounded by
//! `max_message_size` (at most SES's 40 MB). Sends wait for a token bucket shared by every
//! delivery of the process, so a busy relay queues instead of being throttled. SES cannot
//! recognise a resend: a duplicate is possible only when we die between SES accepting a
//! send and the spool recording it. The client is built on the first delivery.

pub mod config;
mod headers;
mod rate;
mod send;

use self::config::{DEFAULT_SEND_RATE, SesSettings};
use self::rate::TokenBucket;
use self::send::{MAX_RECIPIENTS_PER_SEND, Request};
use super::{BoxFuture, Delivered, Delivery, RcptResults, Sink, SinkError};
use crate::config::Size;
use aws_sdk_sesv2::Client;
use std::path::Path;
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;
use tokio::time::Instant;

pub struct SesSink {
    settings: SesSettings,
    /// Built on first use: the credential chain and region lookup run then, not at start-up.
    conn: OnceCell<Conn>,
    /// Every delivery's sends take their turn here (the sink lives as long as the running
    /// configuration, so all deliveries of the process share it).
    bucket: TokenBucket,
    /// Whether the account's rate has been asked for and answered (or the config gave
    /// one); a delivery that finds the lock taken sends at the current rate meanwhile.
    rate_known: tokio::sync::Mutex<bool>,
}

/// The client and where it sends, for error texts.
struct Conn {
    client: Client,
    /// "region eu-west-1, endpoint http://…": where a failure happened.
    place: String,
}

impl SesSink {
    pub fn new(settings: SesSettings) -> Self {
        let rate = settings.max_send_rate.unwrap_or(DEFAULT_SEND_RATE);
        let burst = settings.burst.unwrap_or(rate.max(1.0));
        SesSink {
            rate_known: tokio::sync::Mutex::new(settings.max_send_rate.is_some()),
            bucket: TokenBucket::new(rate, burst),
            conn: OnceCell::new(),
            settings,
        }
    }

    async fn conn(&self) -> &Conn {
        self.conn
            .get_or_init(|| async {
                let sdk = self.settings.aws.load().await;
                let region = sdk
                    .region()
                    .map_or_else(|| "no region".to_string(), |r| format!("region {r}"));
                let place = match sdk.endpoint_url() {
                    Some(e) => format!("{region}, endpoint {e}"),
                    None => region,
                };
                Conn {
                    client: Client::new(&sdk),
                    place,
                }
            })
            .await
    }

    /// Learns the account's MaxSendRate once (GetAccount), unless the config gave a rate.
    /// An answer that is an error (no permission, a stand-in without GetAccount) settles it
    /// at the default; no answer at all (network) leaves it for a later delivery to ask.
    async fn learn_rate(&self, conn: &Conn) {
        let Ok(mut known) = self.rate_known.try_lock() else {
            return;
        };
        if *known {
            return;
        }
        match conn.client.get_account().send().await {
            Ok(account) => {
                *known = true;
                let Some(rate) = account
                    .send_quota()
                    .map(|q| q.max_send_rate())
                    .filter(|r| r.is_finite() && *r > 0.0)
                else {
                    tracing::info!(
                        rate = DEFAULT_SEND_RATE,
                        "ses: GetAccount gave no MaxSendRate; sending at the default rate"
                    );
                    return;
                };
                let burst = self.settings.burst.unwrap_or(rate.max(1.0));
                self.bucket.set_limits(rate, burst);
                tracing::info!(rate, burst, "ses: sending at the account's MaxSendRate");
            }
            Err(e) => {
                let f = crate::aws::describe(&e);
                if f.http_status.is_some() {
                    *known = true;
                    tracing::info!(
                        rate = DEFAULT_SEND_RATE,
                        error = %f.to_sink_error(&format!("GetAccount ({})", conn.place)).message,
                        "ses: no MaxSendRate from GetAccount; sending at the default rate (set max_send_rate to choose)"
                    );
                }
            }
        }
    }

    async fn deliver_all(&self, d: &Delivery<'_>) -> RcptResults {
        let start = Instant::now();
        let deadline = start + self.settings.total_timeout;
        let n = d.rcpts.len();
        let raw = match read_bounded(d.message, self.settings.max_message_size).await {
            Ok(raw) => raw,
            Err(e) => return super::same_for_all(n, Err(e)),
        };
        let (raw, wishes) = match headers::strip(&raw) {
            Ok(stripped) => stripped,
            Err(e) => {
                let e = SinkError::permanent("5.6.0", format!("SES cannot take {e}"));
                return super::same_for_all(n, Err(e));
            }
        };
        let request = Request::new(&self.settings, &wishes, &d.envelope.mail_from);
        let conn = self.conn().await;
        if tokio::time::timeout_at(deadline, self.learn_rate(conn))
            .await
            .is_err()
        {
            tracing::debug!("ses: GetAccount did not answer within total_timeout");
        }
        let mut results = Vec::with_capacity(n);
        // Each batch's result is its recipients': one that failed after another was sent
        // is retried alone, the sent ones are never sent again.
        let too_late = || {
            Err(SinkError::temporary(
                "4.4.2",
                format!(
                    "SendEmail ({}): not sent within total_timeout {}s",
                    conn.place,
                    self.settings.total_timeout.as_secs()
                ),
            ))
        };
        for batch in d.rcpts.chunks(MAX_RECIPIENTS_PER_SEND) {
            let sent_at = Instant::now();
            let attempt = async {
                self.bucket.acquire(batch.len() as f64).await;
                self.send(conn, &request, batch, raw.clone()).await
            };
            // Past the deadline a batch is not begun at all: `timeout_at` would still poll
            // it once, and a request that gets out then is sent by SES yet answered as
            // deferred here, so the retry would send it again.
            let result = if Instant::now() >= deadline {
                too_late()
            } else {
                match tokio::time::timeout_at(deadline, attempt).await {
                    Ok(r) => r,
                    Err(_) => too_late(),
                }
            };
            log_send(d, batch, raw.len(), sent_at, &result);
            if self.settings.relay_log {
                print_relay_line(d, batch, &result);
            }
            results.extend(std::iter::repeat_n(
                result.map(|id| Delivered {
                    detail: format!("ses message id {id}"),
                }),
                batch.len(),
            ));
        }
        results
    }

    /// One SendEmail; SES's MessageId on success.
    async fn send(
        &self,
        conn: &Conn,
        request: &Request,
        rcpts: &[String],
        raw: Vec<u8>,
    ) -> Result<String, SinkError> {
        let op = request
            .apply(conn.client.send_email(), rcpts, raw)
            .map_err(|e| SinkError::temporary("4.3.0", format!("SendEmail: {e}")))?;
        match op.send().await {
            Ok(out) => Ok(out.message_id().unwrap_or("(none)").to_string()),
            Err(e) => {
                Err(crate::aws::describe(&e).to_sink_error(&format!("SendEmail ({})", conn.place)))
            }
        }
    }
}

/// The message, read whole: SES's API takes nothing else. Over `max`: refused (552 5.3.4)
/// before anything is read, since SIZE is only advisory and `deliver` has no SIZE at all.
async fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, SinkError> {
    let too_big = |len: u64| {
        SinkError::permanent(
            "5.3.4",
            format!(
                "message of {len} bytes is over the SES sink's max_message_size {} (SES takes at most 40M raw)",
                Size(max)
            ),
        )
    };
    let io = |e: std::io::Error| SinkError::from_io(path.display(), &e);
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    let len = file.metadata().await.map_err(io)?.len();
    if len > max {
        return Err(too_big(len));
    }
    let mut raw = Vec::with_capacity(len as usize);
    // Bounded again: the file is ours, but a bound that rests on a stat alone is no bound.
    file.take(max + 1).read_to_end(&mut raw).await.map_err(io)?;
    if raw.len() as u64 > max {
        return Err(too_big(raw.len() as u64));
    }
    Ok(raw)
}

/// One line per send, in aws-smtp-relay's shape (`Time`, `IP`, `From`, `To`, `Error`) so
/// that what parsed its log parses ours, plus our id, SES's MessageId, size and duration.
/// `To` is the recipients comma-separated (a log field is a string, not an array).
fn log_send(
    d: &Delivery<'_>,
    rcpts: &[String],
    size: usize,
    started: Instant,
    result: &Result<String, SinkError>,
) {
    let time = jiff::Timestamp::now().to_string();
    let ip = client_ip(d);
    let to = rcpts.join(",");
    let duration_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(message_id) => tracing::info!(
            event = "ses",
            Time = %time,
            IP = ip.as_deref(),
            From = %d.envelope.mail_from,
            To = %to,
            id = d.id,
            message_id = %message_id,
            size,
            duration_ms,
            "sent through SES"
        ),
        Err(e) => tracing::warn!(
            event = "ses",
            Time = %time,
            IP = ip.as_deref(),
            From = %d.envelope.mail_from,
            To = %to,
            Error = %e,
            id = d.id,
            size,
            duration_ms,
            "not sent through SES"
        ),
    }
}

/// The client's address without its port, as aws-smtp-relay logs it.
fn client_ip(d: &Delivery<'_>) -> Option<String> {
    d.envelope.client.addr.as_deref().map(|a| {
        a.parse::<std::net::SocketAddr>()
            .map_or_else(|_| a.to_string(), |s| s.ip().to_string())
    })
}

/// aws-smtp-relay's line as it printed it: `{"Time","IP","From","To":[…],"Error"}`, on
/// stdout when sent (with an empty `Error`) and on stderr when not.
fn print_relay_line(d: &Delivery<'_>, rcpts: &[String], result: &Result<String, SinkError>) {
    use crate::log::{Stream, print_line};
    let ip = client_ip(d);
    let line = serde_json::json!({
        "Time": jiff::Timestamp::now().to_string(),
        "IP": ip.unwrap_or_default(),
        "From": d.envelope.mail_from,
        "To": rcpts,
        "Error": result.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
    });
    let stream = if result.is_ok() {
        Stream::Stdout
    } else {
        Stream::Stderr
    };
    print_line(stream, &line.to_string());
}

impl Sink for SesSink {
    fn deliver<'a>(&'a self, d: &'a Delivery<'a>) -> BoxFuture<'a, RcptResults> {
        Box::pin(self.deliver_all(d))
    }

    /// GetAccount: the credentials work, the endpoint answers, and sending is enabled.
    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let conn = self.conn().await;
            let context = format!("GetAccount ({})", conn.place);
            match conn.client.get_account().send().await {
                Ok(a) if a.sending_enabled() => Ok(()),
                Ok(_) => Err(SinkError::temporary(
                    "4.3.2",
                    format!("{context}: sending is disabled for this account"),
                )),
                Err(e) => Err(crate::aws::describe(&e).to_sink_error(&context)),
            }
        })
    }

    fn max_message_size(&self) -> Option<u64> {
        Some(self.settings.max_message_size)
    }
}

#[cfg(test)]
mod tests {
    use super::config::SesConfig;
    use super::*;
    use crate::sinks::local::test_support::envelope;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A stand-in for SES that takes every request and never answers, counting them.
    async fn silent_endpoint() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut seen = Vec::new();
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        let posts = seen.windows(5).filter(|w| w == b"POST ").count();
                        if posts > 0 {
                            counted.fetch_add(posts, Ordering::SeqCst);
                            seen.clear();
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), requests)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn no_batch_is_begun_after_total_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKIDTEST\naws_secret_access_key = secret\n",
        )
        .unwrap();
        let (endpoint, requests) = silent_endpoint().await;
        let c: SesConfig = toml::from_str(&format!(
            "region = \"eu-west-1\"\nendpoint = \"{endpoint}\"\ncredentials_file = \"{}\"\n\
             max_send_rate = 1000\ntotal_timeout = \"1s\"\n",
            creds.display()
        ))
        .unwrap();
        let sink = SesSink::new(c.check(dir.path()).unwrap());
        let msg = dir.path().join("msg");
        std::fs::write(&msg, b"Subject: x\r\n\r\nhi\r\n").unwrap();
        let rcpts: Vec<String> = (0..120).map(|i| format!("r{i}@example.org")).collect();
        let rcpt_refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let env = envelope("a@example.org", &rcpt_refs);
        let d = Delivery {
            id: "ID1",
            envelope: &env,
            rcpts: &env.rcpts,
            message: &msg,
            first_attempt: true,
        };
        let results = sink.deliver(&d).await;
        assert_eq!(results.len(), 120);
        for r in &results {
            let e = r.as_ref().unwrap_err();
            assert!(e.is_temporary() && e.status == "4.4.2", "{e}");
        }
        // Time for a late request to arrive, if one had been begun.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "only the first of three batches was sent"
        );
    }
}
