//! SMTP/LMTP listeners: sockets, TLS, PROXY headers, connection limits. The protocol
//! itself lives in [`crate::proto`]; this layer only moves bytes and applies policy.

pub mod auth_delay;
pub mod conn;
pub mod handler;
pub mod listener;
pub mod settings;
pub mod tls;
pub mod users;

use crate::pipeline::Pipeline;
use crate::spool::queue::Queue;
use crate::spool::store::Spool;
use settings::ListenerSettings;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{Notify, watch};

/// What a connection needs that a SIGHUP may replace. Each connection takes a snapshot
/// when it starts, so a reload never changes the rules in the middle of a session.
pub struct State {
    pub hostname: String,
    pub pipeline: Arc<Pipeline>,
    /// By listener name.
    pub listeners: HashMap<String, Arc<ListenerSettings>>,
    /// Retry schedule, for messages a sync delivery leaves to the queue.
    pub queue: crate::config::QueueConfig,
}

pub struct Server {
    state: RwLock<Arc<State>>,
    pub spool: Arc<Spool>,
    pub queue: Arc<Queue>,
    shutdown: watch::Sender<bool>,
    /// Open connections, so shutdown can wait for them to finish.
    active: AtomicUsize,
    idle: Notify,
    /// Failed AUTH per listener and client address, across connections and reloads.
    pub auth_failures: auth_delay::FailureDelays,
}

impl Server {
    pub fn new(state: State, spool: Arc<Spool>, queue: Arc<Queue>) -> Arc<Server> {
        let (shutdown, _) = watch::channel(false);
        Arc::new(Server {
            state: RwLock::new(Arc::new(state)),
            spool,
            queue,
            shutdown,
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            auth_failures: auth_delay::FailureDelays::default(),
        })
    }

    pub fn state(&self) -> Arc<State> {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace_state(&self, state: State) {
        let new = Arc::new(state);
        match self.state.write() {
            Ok(mut s) => *s = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Stop accepting, tell idle sessions 421, let sessions in DATA finish; wait for all
    /// connections to end, at most `grace`.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.idle.notified();
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    open = self.active.load(Ordering::SeqCst),
                    "shutdown: connections still open after the grace period"
                );
                return;
            }
        }
    }

    fn conn_started(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(self.clone())
    }
}

pub struct ActiveGuard(Arc<Server>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
