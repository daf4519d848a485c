//! What a connection does with a transaction: the seam where the listener's mode chooses
//! the handler. The session (`proto`) and the connection driver (`conn`) only ask it
//! whether a sender and each recipient may proceed, stream the body into it and hand it
//! the end of the message; the handler answers with the outcome. Today there is one
//! handler, the spool and intake (`queued`, `sync`); proxy mode's live upstream (MAIL and
//! each RCPT relayed as they come, the upstream's reply handed back) is the next.

use super::settings::ListenerSettings;
use super::{Server, State};
use crate::config::{Mode, Protocol};
use crate::delivery::{Answer, SinkError};
use crate::envelope::Envelope;
use crate::intake::{BodyWriter, Completion, Durable, Intake, IntakeMode, Policy};
use crate::proto::Reply;
use std::sync::Arc;

pub enum Handler {
    /// Receive into the spool and let intake filter, keep and deliver it.
    Spool(SpoolHandler),
}

/// Why a message could not be started: the client's reply, and for the log what happened
/// (the client only hears a generic reply).
pub struct StartRefused {
    pub reply: Reply,
    pub error: String,
}

impl Handler {
    /// The handler for one connection of a listener.
    pub fn new(settings: Arc<ListenerSettings>, state: Arc<State>, server: Arc<Server>) -> Self {
        Handler::Spool(SpoolHandler {
            settings,
            state,
            server,
            incoming: None,
            incoming_error: None,
        })
    }

    pub async fn mail(&mut self, from: &str) -> Result<(), Reply> {
        match self {
            Handler::Spool(h) => h.policy().check_sender(from).map_err(reply),
        }
    }

    pub async fn rcpt(&mut self, to: &str) -> Result<(), Reply> {
        match self {
            Handler::Spool(h) => h.policy().check_rcpt(&h.state.pipeline, to).map_err(reply),
        }
    }

    /// A message `id` starts, with our trace header first.
    pub async fn start(&mut self, id: &str, received: &str) -> Result<(), StartRefused> {
        match self {
            Handler::Spool(h) => h.start(id, received).await,
        }
    }

    /// A message is being received.
    pub fn receiving(&self) -> bool {
        match self {
            Handler::Spool(h) => h.incoming.is_some(),
        }
    }

    /// The client's bytes, dot-unstuffed.
    pub async fn data(&mut self, bytes: &[u8]) {
        match self {
            Handler::Spool(h) => h.data(bytes).await,
        }
    }

    /// The message is complete: what the client is told. Sets `envelope.size` and
    /// `envelope.sha256` from what was received.
    pub async fn finish(&mut self, envelope: &mut Envelope) -> Completion {
        match self {
            Handler::Spool(h) => h.finish(envelope).await,
        }
    }

    /// The message being received is dropped (refused at its end, RSET, QUIT, a timeout,
    /// the connection gone): its size so far, or `None` when none was being received.
    pub fn abort(&mut self) -> Option<u64> {
        match self {
            Handler::Spool(h) => h.abort(),
        }
    }
}

pub struct SpoolHandler {
    settings: Arc<ListenerSettings>,
    state: Arc<State>,
    server: Arc<Server>,
    /// The message being received, if DATA/BDAT is under way.
    incoming: Option<BodyWriter>,
    /// First write error while receiving (disk full): the message is answered 451 at its end.
    incoming_error: Option<SpoolWriteError>,
}

impl SpoolHandler {
    fn policy(&self) -> Policy<'_> {
        Policy {
            sender_allow: self.settings.sender_allow.as_ref(),
            recipient_deny: self.settings.recipient_deny.as_ref(),
        }
    }

    async fn start(&mut self, id: &str, received: &str) -> Result<(), StartRefused> {
        let refused = |e: SpoolWriteError| StartRefused {
            reply: Reply::new(
                451,
                e.status(),
                "Temporary local problem: cannot spool the message",
            ),
            error: format!("cannot create spool file: {}", e.message),
        };
        let file = self.server.spool.incoming(id).map_err(|e| {
            refused(SpoolWriteError {
                message: e.to_string(),
                disk_full: e.is_disk_full(),
            })
        })?;
        let path = file.path().display().to_string();
        let inc = BodyWriter::start(file, received)
            .await
            .map_err(|e| refused(SpoolWriteError::new(format!("writing {path}"), &e)))?;
        self.incoming = Some(inc);
        self.incoming_error = None;
        Ok(())
    }

    async fn data(&mut self, bytes: &[u8]) {
        if let Some(inc) = self.incoming.as_mut()
            && self.incoming_error.is_none()
            && let Err(e) = inc.write(bytes).await
        {
            self.incoming_error = Some(SpoolWriteError::new(
                format!("writing {}", inc.path().display()),
                &e,
            ));
        }
    }

    async fn finish(&mut self, envelope: &mut Envelope) -> Completion {
        let lmtp = self.settings.protocol == Protocol::Lmtp;
        let n_answers = if lmtp { envelope.rcpts.len() } else { 1 };
        let Some(inc) = self.incoming.take() else {
            return failed_completion(
                SpoolWriteError {
                    message: "no spool file".into(),
                    disk_full: false,
                },
                n_answers,
                envelope.rcpts.len(),
            );
        };
        envelope.size = inc.size();
        if let Some(e) = self.incoming_error.take() {
            inc.discard();
            return failed_completion(e, n_answers, envelope.rcpts.len());
        }
        match inc.finish().await {
            Ok(received) => {
                envelope.size = received.message.size;
                envelope.sha256 = received.sha256;
                let durable = Durable {
                    spool: &self.server.spool,
                    queue: &self.server.queue,
                    retry: &self.state.queue,
                };
                let intake = Intake {
                    pipeline: &self.state.pipeline,
                    mode: match self.settings.mode {
                        Mode::Sync => IntakeMode::Sync(durable),
                        _ => IntakeMode::Queued(durable),
                    },
                    lmtp,
                    dsn: self.settings.dsn,
                };
                intake.complete(envelope.clone(), received.message).await
            }
            Err(e) => failed_completion(
                SpoolWriteError::new("finishing spool file".into(), &e),
                n_answers,
                envelope.rcpts.len(),
            ),
        }
    }

    fn abort(&mut self) -> Option<u64> {
        self.incoming_error = None;
        let inc = self.incoming.take()?;
        let size = inc.size();
        inc.discard();
        Some(size)
    }
}

/// An answer as protocol reply.
pub(super) fn reply(a: Answer) -> Reply {
    Reply::new(a.code, &a.status, a.text)
}

/// Why the message being received cannot be kept.
struct SpoolWriteError {
    message: String,
    /// ENOSPC/EDQUOT: "mail system full" (4.3.1) rather than a generic local problem.
    disk_full: bool,
}

impl SpoolWriteError {
    fn new(context: String, e: &std::io::Error) -> Self {
        SpoolWriteError {
            message: format!("{context}: {e}"),
            disk_full: crate::delivery::is_disk_full(e),
        }
    }

    fn status(&self) -> &'static str {
        crate::delivery::local_status(self.disk_full)
    }
}

/// The message could not be kept; the transaction line carries the error.
fn failed_completion(error: SpoolWriteError, n: usize, rcpts: usize) -> Completion {
    let failure = SinkError::temporary(
        error.status(),
        "Temporary local problem: cannot write the message to the spool",
    );
    Completion {
        answers: vec![Answer::from_error(&failure); n],
        outcomes: vec![Err(failure); rcpts],
        routes: String::new(),
        outcome: "spool failed".into(),
        error: Some(error.message),
    }
}
