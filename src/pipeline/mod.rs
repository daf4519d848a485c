//! Routing recipients to sinks and running one delivery attempt.
//!
//! A message's recipients are grouped by route; each (route, sink) pair is one delivery
//! unit with its own stable id, so a retry of the unit overwrites or recognises what an
//! earlier attempt wrote.

pub mod router;

use crate::config::{ConfigError, Loaded};
use crate::envelope::Envelope;
use crate::filters::BuiltFilter;
use crate::sinks::{self, BoxFuture, RcptResults, Sink, SinkContext, SinkError};
use crate::spool::queue::Deliverer;
use crate::spool::store::{Pending, body_path};
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
    /// A sink that cannot be built, placed in the config like any other config error.
    #[error(transparent)]
    Sink(ConfigError),
    #[error("route {route}: sink {sink:?} is not defined")]
    UnknownSink { route: String, sink: String },
}

impl Pipeline {
    /// Builds the router and every `[sink.*]`, used by a route or not: `serve`, a SIGHUP
    /// reload and `config check` all come through here, so a config that one of them
    /// refuses is refused by all of them, with the same message.
    pub fn build(loaded: &Loaded, ctx: &SinkContext) -> Result<Pipeline, PipelineError> {
        let config = &loaded.config;
        let router = Router::new(&config.routes, config.server.local_part_case)?;
        let mut sinks = HashMap::new();
        for (name, sink) in &config.sinks {
            let sink = sinks::build(name, sink, ctx)
                .map_err(|e| PipelineError::Sink(loaded.error(&e.path(), e.problem.message)))?;
            sinks.insert(name.clone(), sink);
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

    /// Whether every sink of `rcpt`'s route can take it (see [`Sink::accepts`]); the
    /// first refusal otherwise. The caller has checked that a route exists.
    pub fn sinks_accept(&self, rcpt: &str) -> Result<(), SinkError> {
        let Some(route) = self.router.route(rcpt) else {
            return Ok(());
        };
        for name in &self.routes[route].1 {
            if let Some(sink) = self.sinks.get(name) {
                sink.accepts(rcpt)?;
            }
        }
        Ok(())
    }

    /// All sinks by name, for health checks.
    pub fn sinks(&self) -> impl Iterator<Item = (&String, &Arc<dyn Sink>)> {
        self.sinks.iter()
    }
}

impl Pipeline {
    /// Recipients grouped by route index, routes in the order first seen; the first
    /// recipient without a route is the error.
    pub fn group_by_route(&self, rcpts: &[String]) -> Result<Vec<(usize, Vec<String>)>, String> {
        let mut by_route: Vec<(usize, Vec<String>)> = Vec::new();
        for rcpt in rcpts {
            let Some(route) = self.router.route(rcpt) else {
                return Err(format!("no route for recipient <{rcpt}>"));
            };
            match by_route.iter_mut().find(|(r, _)| *r == route) {
                Some((_, list)) => list.push(rcpt.clone()),
                None => by_route.push((route, vec![rcpt.clone()])),
            }
        }
        Ok(by_route)
    }

    /// One delivery unit per sink of `route` for `rcpts`, delivering `body` (a filtered
    /// body's name, or the message as received). Unit ids are `ID.N`, N counting on from
    /// `next` across the whole message.
    pub fn units_for(
        &self,
        id: &str,
        route: usize,
        rcpts: &[String],
        body: Option<&str>,
        next: &mut usize,
    ) -> Vec<Pending> {
        let (route_name, sink_names) = &self.routes[route];
        sink_names
            .iter()
            .map(|sink| {
                let unit = Pending {
                    route: route_name.clone(),
                    sink: sink.clone(),
                    rcpts: rcpts.to_vec(),
                    unit_id: format!("{id}.{next}"),
                    last_error: None,
                    attempted: false,
                    body: body.map(str::to_string),
                };
                *next += 1;
                unit
            })
            .collect()
    }

    /// The name of route `i`.
    pub fn route_name_at(&self, i: usize) -> &str {
        &self.routes[i].0
    }

    /// The index of the route called `name`.
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.routes.iter().position(|(n, _)| n == name)
    }

    /// Route `i`'s filters, in order.
    pub fn filters_of(&self, _route: usize) -> &[BuiltFilter] {
        &[]
    }
}

impl Deliverer for Pipeline {
    /// Units of the message as received (no filters): what DSNs we make ourselves take.
    fn plan(&self, envelope: &Envelope) -> Result<Vec<Pending>, String> {
        let mut units = Vec::new();
        let mut next = 0;
        for (route, rcpts) in self.group_by_route(&envelope.rcpts)? {
            units.extend(self.units_for(&envelope.id, route, &rcpts, None, &mut next));
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
                let message = body_path(message, unit.body.as_deref());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str, parse_str_with_env};
    use crate::spool::commit::Committer;

    /// A valid config; each case adds one `[sink.*]` table that no route needs to use.
    const BASE: &str = "\
[[route]]
match = [\"*\"]
sinks = [\"m\"]

[sink.m]
type = \"maildir\"
path = \"Maildir\"
";

    fn build(loaded: &Loaded) -> Result<Pipeline, PipelineError> {
        let ctx = SinkContext {
            hostname: "mx.test".into(),
            committer: Arc::new(Committer::new()),
            base_dir: loaded.base_dir.clone(),
        };
        Pipeline::build(loaded, &ctx)
    }

    /// The error building `sink` gives, which must name t.toml, the line holding
    /// `line_of`, and `key`.
    fn assert_sink_error(sink: &str, line_of: &str, key: &str, text: &str) {
        let dir = tempfile::tempdir().unwrap();
        let config = format!("{BASE}\n{sink}");
        let loaded = parse_str(&config, "t.toml", dir.path())
            .unwrap_or_else(|e| panic!("the loader already refuses it: {e}"));
        let line = config
            .lines()
            .position(|l| l.contains(line_of))
            .unwrap_or_else(|| panic!("{line_of:?} not in the config"))
            + 1;
        let Err(PipelineError::Sink(e)) = build(&loaded) else {
            panic!("built:\n{config}");
        };
        let message = e.to_string();
        let want = format!("t.toml:{line}: {key}: ");
        assert!(
            message.starts_with(&want),
            "{want:?} is not the start of {message:?}"
        );
        assert!(message.contains(text), "{text:?} not in {message:?}");
    }

    #[test]
    fn sink_errors_name_file_line_and_key() {
        let relay = "[sink.up]\ntype = \"smtp\"\naddress = \"127.0.0.1:25\"\n";
        assert_sink_error(
            &format!("{relay}username = \"u\"\npassword_file = \"/nonexistent\"\n"),
            "password_file",
            "sink.up.password_file",
            "/nonexistent",
        );
        assert_sink_error(
            &format!("{relay}username = \"u\"\npassword_env = \"MAILCHUTE_TEST_SURELY_UNSET\"\n"),
            "password_env",
            "sink.up.password_env",
            "not set",
        );
        assert_sink_error(
            &format!("{relay}helo = \"a b\"\n"),
            "helo",
            "sink.up.helo",
            "without spaces",
        );
        assert_sink_error(
            &format!("{relay}tls = \"starttls\"\ntls_name = \"a b\"\n"),
            "tls_name",
            "sink.up.tls_name",
            "not a valid TLS server name",
        );
        assert_sink_error(
            &format!("{relay}tls = \"starttls\"\nca_file = \"/nonexistent/ca.pem\"\n"),
            "ca_file",
            "sink.up.ca_file",
            "/nonexistent/ca.pem",
        );
        // A key that is not written is placed at its table.
        assert_sink_error(
            "[sink.up]\ntype = \"smtp\"\naddress = \"unix:/x\"\ntls = \"starttls\"\n",
            "[sink.up]",
            "sink.up.tls_name",
            "Unix socket",
        );
        assert_sink_error(
            "[sink.d]\ntype = \"maildir\"\npath = \"x/{user}\"\n",
            "{user}",
            "sink.d.path",
            "unknown variable {user}",
        );
        assert_sink_error(
            "[sink.e]\ntype = \"exec\"\ncommand = [\"{rcpt}\"]\n",
            "command",
            "sink.e.command[0]",
            "without variables",
        );
    }

    #[test]
    fn sink_errors_from_the_environment_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let config = format!("{BASE}\n[sink.up]\ntype = \"smtp\"\naddress = \"127.0.0.1:25\"\n");
        let env = vec![("MAILCHUTE_SINK__UP__HELO".to_string(), "a b".to_string())];
        let loaded = parse_str_with_env(&config, "t.toml", dir.path(), env).unwrap();
        let Err(e) = build(&loaded) else {
            panic!("built");
        };
        assert!(
            e.to_string()
                .starts_with("t.toml: sink.up.helo (set by MAILCHUTE_SINK__UP__HELO): "),
            "{e}"
        );
    }
}
