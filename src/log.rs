//! Logging setup and the one-line-per-transaction record.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: JSON (one object per line) or human text, on stderr.
/// The level comes from `MAILCHUTE_LOG` (e.g. `debug`, `mailchute=trace`), default `info`.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("MAILCHUTE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// One event at warn when `$warn` (something failed that the operator should look at), else
/// at info: tracing's level must be a constant at each call site.
macro_rules! warn_or_info {
    ($warn:expr, $($fields:tt)*) => {
        if $warn {
            tracing::warn!($($fields)*)
        } else {
            tracing::info!($($fields)*)
        }
    };
}
pub(crate) use warn_or_info;

/// What one SMTP/LMTP transaction did; logged as one line when it ends.
#[derive(Debug, Default)]
pub struct Transaction<'a> {
    pub id: &'a str,
    pub listener: &'a str,
    pub client_ip: Option<&'a str>,
    pub helo: Option<&'a str>,
    pub tls: Option<&'a str>,
    /// The facts a trusted MTA forwarded (XFORWARD), "ADDR=.. HELO=.." ; or the load
    /// balancer a PROXY header came through.
    pub forwarded: Option<String>,
    pub from: &'a str,
    pub rcpts: &'a [String],
    pub size: u64,
    pub routes: String,
    /// "sink=delivered" / "sink=deferred 4.4.1 ..." pairs, `; `-separated.
    pub outcome: String,
    /// The answer given to the client ("250 2.0.0 ...").
    pub reply: String,
    pub duration_ms: u64,
    pub error: Option<String>,
}

impl Transaction<'_> {
    pub fn log(&self) {
        let rcpts = self.rcpts.join(",");
        warn_or_info!(
            self.error.is_some(),
            event = "transaction",
            id = self.id,
            listener = self.listener,
            client_ip = self.client_ip,
            helo = self.helo,
            tls = self.tls,
            forwarded = self.forwarded,
            from = self.from,
            rcpts = rcpts,
            size = self.size,
            route = self.routes,
            outcome = self.outcome,
            reply = self.reply,
            duration_ms = self.duration_ms,
            error = self.error,
        );
    }
}
