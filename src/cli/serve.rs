//! `mailchute serve`: start everything, run until SIGTERM, reload on SIGHUP.

use crate::config::{self, Config, Loaded, Source};
use crate::pipeline::Pipeline;
use crate::sinks::SinkContext;
use crate::smtpd::settings::{ListenerSettings, listener_name};
use crate::smtpd::{Server, State, listener};
use crate::spool::commit::Committer;
use crate::spool::queue::{Deliverer, Queue, SHUTDOWN_GRACE};
use crate::spool::store::Spool;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ServeError {
    pub message: String,
    /// The config cannot work as written (a sink that cannot be built, nothing to listen
    /// on, an unknown user), as opposed to the system refusing (a port taken, a directory
    /// that cannot be created): the binary's edge exits with a different status for each.
    pub config: bool,
}

impl ServeError {
    fn new(message: impl Into<String>) -> Self {
        ServeError {
            message: message.into(),
            config: false,
        }
    }
}

fn fail(e: impl std::fmt::Display) -> ServeError {
    ServeError::new(e.to_string())
}

/// [`fail`] for a problem in the config.
fn config_fail(e: impl std::fmt::Display) -> ServeError {
    ServeError {
        config: true,
        ..fail(e)
    }
}

/// What `serve` does before its runtime starts: load the config (the embedded default when
/// no file is found) and start logging, to stderr unless `--log-file` says otherwise.
pub fn prepare(config: Option<&Path>, log: &super::LogOptions) -> Result<Loaded, super::CliError> {
    let loaded = config::load(config, true)?;
    log.init(
        loaded.config.server.log_format,
        crate::log::Destination::Stderr,
    )?;
    Ok(loaded)
}

pub async fn run(loaded: Loaded) -> Result<(), ServeError> {
    run_notify(loaded, Box::new(|| {})).await
}

/// [`run`], calling `ready` once the listeners are bound, the pid file is written and
/// privileges are dropped: what `daemon start` waits for before it exits.
pub async fn run_notify(loaded: Loaded, ready: Box<dyn FnOnce() + Send>) -> Result<(), ServeError> {
    let config = &loaded.config;
    if let Some(warning) = config::readable_secrets_warning(&loaded) {
        tracing::warn!("{warning}");
    }
    if config.listeners.is_empty() {
        return Err(config_fail(format!(
            "nothing to listen on: {} has no [[listener]]",
            source_name(&loaded)
        )));
    }
    let hostname = hostname_of(config);
    let committer = Arc::new(Committer::with_method(config.server.sync_method));
    // Before anything is written: a config whose sinks cannot be built leaves no trace.
    let pipeline = Arc::new(build_pipeline(&loaded, &committer)?);
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| fail(format!("creating data_dir {}: {e}", data_dir.display())))?;
    let pid_file = super::pidfile::Held::take(&data_dir).map_err(fail)?;
    // Where `sendmail` leaves messages while the daemon is down (cli::sendmail::pickup).
    let pickup_access = super::sendmail::pickup::PickupAccess::of(config).map_err(fail)?;
    let pickup_dir =
        super::sendmail::pickup::prepare_dir(&data_dir, pickup_access).map_err(fail)?;

    let spool = Arc::new(Spool::open(&data_dir, committer.clone()).map_err(fail)?);
    let recovered = spool.recover().map_err(fail)?;
    if !recovered.is_empty() {
        tracing::info!(
            messages = recovered.len(),
            "spool recovered: resuming delivery"
        );
    }
    let listeners = listener_settings(config, &pipeline)?;

    // The run user and group, looked up while still root: unix sockets are theirs unless
    // the listener names socket_owner/socket_group.
    let run_as = match &config.server.user {
        Some(user) => {
            let (uid, primary) = crate::privileges::user_id(user).map_err(config_fail)?;
            let gid = match &config.server.group {
                Some(g) => crate::privileges::group_id(g).map_err(config_fail)?,
                None => primary,
            };
            Some((user, uid, gid))
        }
        None => None,
    };
    let mut bound = Vec::new();
    for l in &config.listeners {
        let name = listener_name(l);
        let owner = run_as.map(|(_, uid, gid)| (uid, gid));
        bound.push((name.clone(), listener::bind(l, &name, owner).map_err(fail)?));
        tracing::info!(listener = %name, address = %l.address, protocol = l.protocol.as_str(), mode = l.mode.as_str(), "listening");
    }
    match run_as {
        Some((user, uid, gid)) => {
            // The spool, dead letters and pid file were made as root a moment ago.
            // (pickup/'s files keep their owners: who submitted them.)
            super::sendmail::pickup::chown_data_dir(&data_dir, uid, gid, pickup_access)
                .map_err(|e| fail(format!("handing data_dir to {user}: {e}")))?;
            crate::privileges::drop_to(user, config.server.group.as_deref())
                .map_err(|e| fail(format!("dropping privileges: {e}")))?
        }
        None if crate::privileges::is_root() => {
            tracing::warn!("running as root: set [server] user to drop privileges after binding")
        }
        None => {}
    }

    // As the run user, now that privileges are dropped: what that user cannot do is what
    // would fail.
    tokio::spawn(check_sinks(pipeline.clone()));
    let queue = Queue::start(
        spool.clone(),
        pipeline.clone() as Arc<dyn Deliverer>,
        config.queue.clone(),
        hostname.clone(),
        recovered,
    );
    let server = Server::new(
        State {
            hostname,
            pipeline,
            listeners,
            queue: config.queue.clone(),
        },
        spool,
        queue.clone(),
    );
    for (name, b) in bound {
        tokio::spawn(listener::serve(server.clone(), name, b));
    }
    // Picked-up messages come in as if through the first unix LMTP listener (sendmail's).
    let pickup_listener = config
        .listeners
        .iter()
        .find(|l| l.address.starts_with("unix:") && l.protocol == config::Protocol::Lmtp)
        .map(listener_name);
    tokio::spawn(super::sendmail::pickup::drain_loop(
        server.clone(),
        pickup_dir,
        pickup_listener,
    ));
    tracing::info!(pid = std::process::id(), config = %source_name(&loaded), "mailchute started");

    let mut term = signal(SignalKind::terminate()).map_err(fail)?;
    let mut int = signal(SignalKind::interrupt()).map_err(fail)?;
    let mut hup = signal(SignalKind::hangup()).map_err(fail)?;
    // Only now: a `daemon reload` or `stop` right after `start` must find the handlers.
    ready();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&loaded, &server, &queue, &committer),
        }
    }
    tracing::info!(
        "shutting down: no new connections; finishing sessions and deliveries under way"
    );
    // Sessions and deliveries drain together, so the whole stop takes at most one grace
    // period; a second signal cuts it short (what is unfinished stays in the spool, or was
    // never acknowledged).
    let drain = async {
        tokio::join!(server.shutdown(SHUTDOWN_GRACE), queue.shutdown());
    };
    tokio::select! {
        () = drain => {}
        _ = term.recv() => second_signal(),
        _ = int.recv() => second_signal(),
    }
    drop(pid_file);
    tracing::info!("stopped");
    Ok(())
}

/// Runs every sink's health check and logs the result: a mailbox directory the run user
/// cannot write, an upstream that is down, a command it cannot run. Not fatal — the
/// problem may be fixed (or the upstream come back) before mail arrives, and until then
/// its deliveries are deferred — but said at once rather than at the first message.
async fn check_sinks(pipeline: Arc<Pipeline>) {
    let mut sinks: Vec<_> = pipeline.sinks().collect();
    sinks.sort_by(|a, b| a.0.cmp(b.0));
    for (name, sink) in sinks {
        match sink.healthcheck().await {
            Ok(()) => tracing::debug!(sink = %name, "sink health check passed"),
            Err(e) => tracing::warn!(
                sink = %name,
                error = %e.message,
                "sink health check failed: its deliveries will be deferred until this is fixed"
            ),
        }
    }
}

/// Queued deliveries name their sink: one that a reload removed or renamed keeps them
/// waiting until they expire, unless the sink comes back. Say so, once per sink.
fn warn_of_stranded_units(queue: &Queue, new: &Config) {
    for (sink, units) in queue.units_by_sink() {
        if !new.sinks.contains_key(&sink) {
            tracing::warn!(
                sink = %sink,
                units,
                "queued deliveries wait for a sink the new configuration does not define; they stay queued until it is defined again or they expire (see `mailchute queue list`)"
            );
        }
    }
}

fn second_signal() {
    tracing::warn!(
        "second signal: stopping now; unfinished deliveries stay queued, unfinished sessions get no answer"
    );
}

fn reload(loaded: &Loaded, server: &Arc<Server>, queue: &Arc<Queue>, committer: &Arc<Committer>) {
    // A log file logrotate moved away: what follows goes to a new one at the same path.
    if let Err(e) = crate::log::reopen() {
        tracing::error!(error = %e, "SIGHUP: could not reopen the log file; logging on to the old one");
    }
    let Source::File(path) = &loaded.source else {
        tracing::info!("SIGHUP: running on the embedded default; nothing to reload");
        return;
    };
    let result = (|| -> Result<(), ServeError> {
        let new = config::load_file(path).map_err(fail)?;
        refuse_restart_only_changes(&loaded.config, &new.config)?;
        if new.config.server.sync_method != loaded.config.server.sync_method {
            tracing::warn!("[server] sync_method changes take effect at the next restart");
        }
        let hostname = hostname_of(&new.config);
        let pipeline = Arc::new(build_pipeline(&new, committer)?);
        warn_of_stranded_units(queue, &new.config);
        tokio::spawn(check_sinks(pipeline.clone()));
        let listeners = listener_settings(&new.config, &pipeline)?;
        queue.reload(
            pipeline.clone() as Arc<dyn Deliverer>,
            new.config.queue.clone(),
        );
        server.replace_state(State {
            hostname,
            pipeline,
            listeners,
            queue: new.config.queue.clone(),
        });
        Ok(())
    })();
    match result {
        Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
        Err(e) => {
            tracing::error!(config = %path.display(), error = %e, "reload refused; the running configuration stays")
        }
    }
}

/// What a running daemon cannot change: the sockets it bound (and the names its accept
/// loops look their settings up by), where its spool is, and who it runs as.
fn refuse_restart_only_changes(running: &Config, new: &Config) -> Result<(), ServeError> {
    let sockets = |c: &Config| -> Vec<(String, String)> {
        c.listeners
            .iter()
            .map(|l| (listener_name(l), l.address.clone()))
            .collect()
    };
    let (old_sockets, new_sockets) = (sockets(running), sockets(new));
    if old_sockets != new_sockets {
        let show = |v: &[(String, String)]| {
            v.iter()
                .map(|(n, a)| format!("{n} ({a})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(ServeError::new(format!(
            "listeners changed (running: [{}], new: [{}]): adding, removing, renaming or moving a listener needs a restart",
            show(&old_sockets),
            show(&new_sockets)
        )));
    }
    let (old, new) = (&running.server, &new.server);
    for (key, changed) in [
        ("data_dir", old.data_dir != new.data_dir),
        ("user", old.user != new.user),
        ("group", old.group != new.group),
    ] {
        if changed {
            return Err(ServeError::new(format!(
                "[server] {key} changed: that needs a restart"
            )));
        }
    }
    Ok(())
}

/// Routes and sinks as `serve` and a reload build them.
fn build_pipeline(loaded: &Loaded, committer: &Arc<Committer>) -> Result<Pipeline, ServeError> {
    let ctx = SinkContext {
        hostname: hostname_of(&loaded.config),
        committer: committer.clone(),
        base_dir: loaded.base_dir.clone(),
    };
    Pipeline::build(loaded, &ctx).map_err(config_fail)
}

/// What `config check` adds to loading: every sink built exactly as `serve` builds it, so
/// that a secret that cannot be read or a template that cannot be parsed fails the check
/// and not the start. Building reads files but binds, connects and creates nothing, and
/// the committer is never asked to sync. Returns what `config check` prints: the config as
/// understood, with each sink's and filter's summary from its registry.
pub fn check(loaded: &Loaded) -> Result<String, ServeError> {
    let committer = Arc::new(Committer::with_method(loaded.config.server.sync_method));
    let pipeline = build_pipeline(loaded, &committer)?;
    // Every listener built as `serve` builds it: its AUTH users (a missing env var, a user
    // without the password CRAM-MD5 needs) and its TLS certificate and key (unreadable, a
    // wrong or missing passphrase, a key that is not the certificate's) fail the check,
    // not the start.
    listener_settings(&loaded.config, &pipeline)?;
    Ok(config::describe(loaded, pipeline.summaries()))
}

/// A sink's limit as a listener may promise it: the sink sees the client's bytes plus our
/// `Received:` line and what filters add, so a message right at SIZE would be accepted and
/// then refused by the sink (a bounce, in queued mode). 64 KiB, or a sixteenth of small
/// limits, is kept for that.
fn with_headroom(sink_limit: u64) -> u64 {
    sink_limit - (64 * 1024).min(sink_limit / 16)
}

/// Each listener's settings, its message size capped by the sinks' own limits (SES's 40 MB):
/// SIZE never promises what a sink on the way cannot take.
fn listener_settings(
    config: &Config,
    pipeline: &Pipeline,
) -> Result<HashMap<String, Arc<ListenerSettings>>, ServeError> {
    let mut map = HashMap::new();
    for l in &config.listeners {
        let mut s = ListenerSettings::build(l).map_err(config_fail)?;
        if let Some(cap) = pipeline.max_message_size().map(with_headroom)
            && (s.max_message_size == 0 || s.max_message_size > cap)
        {
            s.max_message_size = cap;
        }
        map.insert(s.name.clone(), Arc::new(s));
    }
    Ok(map)
}

pub fn hostname_of(config: &Config) -> String {
    // The loader fills it from the system; the fallback only matters for hand-built configs.
    config
        .server
        .hostname
        .clone()
        .unwrap_or_else(|| "localhost".into())
}

fn source_name(loaded: &Loaded) -> String {
    match &loaded.source {
        Source::File(p) => p.display().to_string(),
        Source::Embedded => "the embedded default configuration".into(),
    }
}
