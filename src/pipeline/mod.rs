//! Routing recipients to sinks and running one delivery attempt.
//!
//! A message's recipients are grouped by route; each (route, sink) pair is one delivery
//! unit with its own stable id, so a retry of the unit overwrites or recognises what an
//! earlier attempt wrote.

pub mod router;

use crate::config::Config;
use crate::envelope::Envelope;
use crate::sinks::{self, BoxFuture, RcptResults, Sink, SinkContext, SinkError};
use crate::spool::queue::Deliverer;
use crate::spool::store::Pending;
use router::{Router, route_name};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub struct Pipeline {
    router: Router,
    /// Route names and their sink names, by route index.
    routes: Vec<(String, Vec<String>)>,
    sinks: HashMap<String, Arc<dyn Sink>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Router(#[from] router::RouterError),
    #[error(transparent)]
    Sink(#[from] sinks::BuildError),
    #[error("route {route}: sink {sink:?} is not defined")]
    UnknownSink { route: String, sink: String },
}

impl Pipeline {
    pub fn build(config: &Config, ctx: &SinkContext) -> Result<Pipeline, PipelineError> {
        let router = Router::new(&config.routes, config.server.local_part_case)?;
        let mut sinks = HashMap::new();
        for (name, sink) in &config.sinks {
            sinks.insert(name.clone(), sinks::build(name, sink, ctx)?);
        }
        let mut routes = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let name = route_name(r, i);
            if let Some(missing) = r.sinks.iter().find(|s| !sinks.contains_key(*s)) {
                return Err(PipelineError::UnknownSink {
                    route: name,
                    sink: missing.clone(),
                });
            }
            routes.push((name, r.sinks.clone()));
        }
        Ok(Pipeline {
            router,
            routes,
            sinks,
        })
    }

    /// The name of the route `rcpt` goes to; `None` means "refuse at RCPT".
    pub fn route_of(&self, rcpt: &str) -> Option<&str> {
        self.router.route(rcpt).map(|i| self.routes[i].0.as_str())
    }

    /// All sinks by name, for health checks.
    pub fn sinks(&self) -> impl Iterator<Item = (&String, &Arc<dyn Sink>)> {
        self.sinks.iter()
    }
}

impl Deliverer for Pipeline {
    fn plan(&self, envelope: &Envelope) -> Result<Vec<Pending>, String> {
        // Group recipients by route, keeping the order in which routes were first seen.
        let mut by_route: Vec<(usize, Vec<String>)> = Vec::new();
        for rcpt in &envelope.rcpts {
            let Some(route) = self.router.route(rcpt) else {
                return Err(format!("no route for recipient <{rcpt}>"));
            };
            match by_route.iter_mut().find(|(r, _)| *r == route) {
                Some((_, list)) => list.push(rcpt.clone()),
                None => by_route.push((route, vec![rcpt.clone()])),
            }
        }
        let mut units = Vec::new();
        for (route, rcpts) in by_route {
            let (route_name, sink_names) = &self.routes[route];
            for sink in sink_names {
                units.push(Pending {
                    route: route_name.clone(),
                    sink: sink.clone(),
                    rcpts: rcpts.clone(),
                    unit_id: format!("{}.{}", envelope.id, units.len()),
                    last_error: None,
                    attempted: false,
                });
            }
        }
        Ok(units)
    }

    fn attempt<'a>(
        &'a self,
        envelope: &'a Envelope,
        message: &'a Path,
        units: &'a [Pending],
    ) -> BoxFuture<'a, Vec<RcptResults>> {
        Box::pin(async move {
            // Units run concurrently: a fan-out is as slow as its slowest sink, not the sum.
            let mut tasks = tokio::task::JoinSet::new();
            for (i, unit) in units.iter().enumerate() {
                let Some(sink) = self.sinks.get(&unit.sink).cloned() else {
                    continue;
                };
                let envelope = envelope.clone();
                let message = message.to_path_buf();
                let unit = unit.clone();
                tasks.spawn(async move {
                    let delivery = sinks::Delivery {
                        id: &unit.unit_id,
                        envelope: &envelope,
                        rcpts: &unit.rcpts,
                        message: &message,
                        first_attempt: !unit.attempted,
                    };
                    let mut results = sink.deliver(&delivery).await;
                    // A sink that miscounts must not make us drop or invent recipients.
                    results.resize(
                        unit.rcpts.len(),
                        Err(SinkError::temporary(
                            "4.3.0",
                            format!("sink {} returned too few results", unit.sink),
                        )),
                    );
                    (i, results)
                });
            }
            let mut out: Vec<Option<RcptResults>> = vec![None; units.len()];
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok((i, results)) => out[i] = Some(results),
                    Err(e) => tracing::error!(error = %e, "sink task failed"),
                }
            }
            // A unit whose sink is gone (reload) or whose task panicked is "temporary":
            // retried later, never lost.
            out.into_iter()
                .zip(units)
                .map(|(r, u)| {
                    r.unwrap_or_else(|| {
                        let why = if self.sinks.contains_key(&u.sink) {
                            format!("sink {:?} failed unexpectedly", u.sink)
                        } else {
                            format!(
                                "sink {:?} is not defined in the running configuration",
                                u.sink
                            )
                        };
                        sinks::same_for_all(u.rcpts.len(), Err(SinkError::temporary("4.3.0", why)))
                    })
                })
                .collect()
        })
    }
}
