//! Routing recipients to sinks and running one delivery attempt.
//!
//! A message's recipients are grouped by route; each (route, sink) pair is one delivery
//! unit with its own stable id, so a retry of the unit overwrites or recognises what an
//! earlier attempt wrote.

pub mod router;

use crate::config::error::key;
use crate::config::{ConfigError, Loaded, Seg, Summaries};
use crate::envelope::Envelope;
use crate::filters::{self, BuiltFilter, FilterContext};
use crate::sinks::{self, BoxFuture, RcptResults, Sink, SinkContext, SinkError};
use crate::spool::queue::Deliverer;
use crate::spool::store::{Pending, body_path};
use router::{Router, route_name};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

pub struct Pipeline {
    router: Router,
    /// By route index, as the router numbers them.
    routes: Vec<Route>,
    sinks: HashMap<String, Arc<dyn Sink>>,
    /// What `config check` prints for each sink and filter.
    summaries: Summaries,
}

/// One `[[route]]` as built.
struct Route {
    /// `route_name(r, i)`: what re-routes and the spool call it.
    name: String,
    /// Its filters, in the order they run.
    filters: Vec<BuiltFilter>,
    /// Its sinks' names (keys of `Pipeline::sinks`).
    sinks: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Router(#[from] router::RouterError),
    /// A sink that cannot be built, placed in the config like any other config error.
    #[error(transparent)]
    Sink(ConfigError),
    /// A filter that cannot be built or re-routes where it must not, placed in the config.
    #[error(transparent)]
    Filter(ConfigError),
    #[error("route {route}: sink {sink:?} is not defined")]
    UnknownSink { route: String, sink: String },
    #[error("route {route}: filter {filter:?} is not defined")]
    UnknownFilter { route: String, filter: String },
}

impl Pipeline {
    /// Builds the router, every `[sink.*]` and every `[filter.*]`, used by a route or not:
    /// `serve`, a SIGHUP reload and `config check` all come through here, so a config that
    /// one of them refuses is refused by all of them, with the same message.
    pub fn build(loaded: &Loaded, ctx: &SinkContext) -> Result<Pipeline, PipelineError> {
        Pipeline::build_with(loaded, ctx, filters::REGISTRY, None)
    }

    /// [`Pipeline::build`] for one message of a one-shot ingress (`deliver`): only the sinks
    /// of the routes `rcpts` take (and the routes their filters may re-route to) are built,
    /// so a run connects to, and reads the secrets of, nothing it does not deliver to.
    pub fn build_for(
        loaded: &Loaded,
        ctx: &SinkContext,
        rcpts: &[String],
    ) -> Result<Pipeline, PipelineError> {
        Pipeline::build_with(loaded, ctx, filters::REGISTRY, Some(rcpts))
    }

    /// [`Pipeline::build`] with another filter registry (tests add filter types), and the
    /// recipients whose sinks alone are built (`None`: every sink).
    fn build_with(
        loaded: &Loaded,
        ctx: &SinkContext,
        filter_types: &[(&str, filters::Constructor)],
        only_for: Option<&[String]>,
    ) -> Result<Pipeline, PipelineError> {
        let config = &loaded.config;
        let router = Router::new(&config.routes, config.server.local_part_case)?;
        let mut summaries = Summaries::default();
        let filter_ctx = FilterContext {
            hostname: ctx.hostname.clone(),
            base_dir: ctx.base_dir.clone(),
        };
        let mut built_filters = HashMap::new();
        for (name, table) in &config.filters {
            let (built, summary) = filters::build_from(filter_types, name, table, &filter_ctx)
                .map_err(|e| PipelineError::Filter(loaded.error(&e.path(), e.problem.message)))?;
            summaries.filters.insert(name.clone(), summary);
            built_filters.insert(name.clone(), built);
        }
        let mut routes = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let name = route_name(r, i);
            if let Some(missing) = r.sinks.iter().find(|s| !config.sinks.contains_key(*s)) {
                return Err(PipelineError::UnknownSink {
                    route: name,
                    sink: missing.clone(),
                });
            }
            let mut filters = Vec::new();
            for f in &r.filters {
                let Some(built) = built_filters.get(f) else {
                    return Err(PipelineError::UnknownFilter {
                        route: name,
                        filter: f.clone(),
                    });
                };
                filters.push(built.clone());
            }
            routes.push(Route {
                name,
                filters,
                sinks: r.sinks.clone(),
            });
        }
        check_reroutes(&routes).map_err(|(filter, message)| {
            PipelineError::Filter(loaded.error(&[key("filter"), Seg::Key(filter)], message))
        })?;
        let needed = only_for.map(|rcpts| needed_sinks(&router, &routes, rcpts));
        let mut sinks = HashMap::new();
        for (name, table) in &config.sinks {
            if needed.as_ref().is_some_and(|n| !n.contains(name)) {
                continue;
            }
            let built = sinks::build(name, table, ctx)
                .map_err(|e| PipelineError::Sink(loaded.error(&e.path(), e.problem.message)))?;
            summaries.sinks.insert(name.clone(), built.summary);
            sinks.insert(name.clone(), built.sink);
        }
        Ok(Pipeline {
            router,
            routes,
            sinks,
            summaries,
        })
    }

    /// The name of the route `rcpt` goes to; `None` means "refuse at RCPT".
    pub fn route_of(&self, rcpt: &str) -> Option<&str> {
        self.router
            .route(rcpt)
            .map(|i| self.routes[i].name.as_str())
    }

    /// The index of the route called `name` (what a re-route names).
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.name == name)
    }

    /// The name of route `i`. Panics on an index the pipeline did not give out.
    pub fn route_name_at(&self, i: usize) -> &str {
        &self.routes[i].name
    }

    /// Route `route`'s filters, in the order they run. Panics on an index the pipeline did
    /// not give out.
    pub fn filters_of(&self, route: usize) -> &[BuiltFilter] {
        &self.routes[route].filters
    }

    /// What `config check` prints for each sink and filter.
    pub fn summaries(&self) -> &Summaries {
        &self.summaries
    }

    /// Whether every sink of `rcpt`'s route can take it (see [`Sink::accepts`]); the
    /// first refusal otherwise. The caller has checked that a route exists.
    pub fn sinks_accept(&self, rcpt: &str) -> Result<(), SinkError> {
        let Some(route) = self.router.route(rcpt) else {
            return Ok(());
        };
        for name in &self.routes[route].sinks {
            if let Some(sink) = self.sinks.get(name) {
                sink.accepts(rcpt)?;
            }
        }
        Ok(())
    }

    /// The smallest [`Sink::max_message_size`] of the sinks the routes use (every route is
    /// reachable from every listener): what a listener's SIZE must not exceed.
    pub fn max_message_size(&self) -> Option<u64> {
        self.routes
            .iter()
            .flat_map(|r| &r.sinks)
            .filter_map(|name| self.sinks.get(name)?.max_message_size())
            .min()
    }

    /// All sinks by name, for health checks.
    pub fn sinks(&self) -> impl Iterator<Item = (&String, &Arc<dyn Sink>)> {
        self.sinks.iter()
    }
}

/// The sinks of the routes `rcpts` take, and of every route their filters may re-route
/// them to.
fn needed_sinks(router: &Router, routes: &[Route], rcpts: &[String]) -> HashSet<String> {
    let mut todo: Vec<usize> = rcpts.iter().filter_map(|r| router.route(r)).collect();
    let mut seen = HashSet::new();
    let mut sinks = HashSet::new();
    while let Some(route) = todo.pop() {
        if !seen.insert(route) {
            continue;
        }
        sinks.extend(routes[route].sinks.iter().cloned());
        for f in &routes[route].filters {
            todo.extend(
                f.filter
                    .reroutes()
                    .iter()
                    .filter_map(|to| routes.iter().position(|r| &r.name == to)),
            );
        }
    }
    sinks
}

/// Each name a filter re-routes to must be a route, and following re-routes (a route, its
/// filters' re-routes, theirs, ...) must never come back to a route already on the way:
/// the message would go round for ever. The error names the filter to blame.
fn check_reroutes(routes: &[Route]) -> Result<(), (String, String)> {
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    for route in routes {
        for f in &route.filters {
            for target in f.filter.reroutes() {
                if !names.contains(&target.as_str()) {
                    return Err((
                        f.name.clone(),
                        format!(
                            "re-routes to \"{target}\", which is not a route (routes: {})",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    // Depth-first from every route; `path` holds the routes on the way, `clear` those
    // already shown to lead into no cycle (each is walked once, however many lead to it).
    fn walk(
        routes: &[Route],
        at: usize,
        path: &mut Vec<usize>,
        clear: &mut [bool],
    ) -> Result<(), (String, String)> {
        if clear[at] {
            return Ok(());
        }
        path.push(at);
        for f in &routes[at].filters {
            for target in f.filter.reroutes() {
                let Some(next) = routes.iter().position(|r| r.name == target) else {
                    continue;
                };
                if path.contains(&next) {
                    let from = path.iter().position(|&r| r == next).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[from..]
                        .iter()
                        .map(|&r| routes[r].name.as_str())
                        .collect();
                    cycle.push(&routes[next].name);
                    return Err((
                        f.name.clone(),
                        format!(
                            "re-routes route \"{}\" to \"{target}\", which makes a cycle: {}",
                            routes[at].name,
                            cycle.join(" -> ")
                        ),
                    ));
                }
                walk(routes, next, path, clear)?;
            }
        }
        path.pop();
        clear[at] = true;
        Ok(())
    }
    let mut clear = vec![false; routes.len()];
    for start in 0..routes.len() {
        walk(routes, start, &mut Vec::new(), &mut clear)?;
    }
    Ok(())
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
        let route = &self.routes[route];
        route
            .sinks
            .iter()
            .map(|sink| {
                let unit = Pending {
                    route: route.name.clone(),
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

    /// Test filters on route `route` (the registry builds only the config's).
    #[cfg(test)]
    pub(crate) fn set_filters(&mut self, route: usize, filters: Vec<BuiltFilter>) {
        self.routes[route].filters = filters;
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
    fn a_table_without_a_type_gets_the_list_of_types() {
        let dir = tempfile::tempdir().unwrap();
        let sink_types: Vec<&str> = sinks::types().collect();
        let sink_want = format!(
            "sink.x: missing key `type` (one of: {})",
            sink_types.join(", ")
        );
        assert!(sink_want.contains("maildir, mh, mbox, smtp, lmtp, exec, discard"));
        for (table, want) in [
            ("[sink.x]\npath = \"a\"\n", sink_want.as_str()),
            (
                "[filter.x]\nheader = \"a\"\n",
                "filter.x: missing key `type` (one of: rewrite)",
            ),
        ] {
            let config = format!("{BASE}\n{table}");
            let loaded = parse_str(&config, "t.toml", dir.path()).unwrap();
            let Err(e) = build(&loaded) else {
                panic!("built:\n{config}");
            };
            let line = BASE.lines().count() + 2;
            assert_eq!(e.to_string(), format!("t.toml:{line}: {want}"));
        }
        // An override that creates a table names itself, not some line of the file.
        let env = vec![("MAILCHUTE_SINK__NEW__PATH".to_string(), "/x".to_string())];
        let loaded = parse_str_with_env(BASE, "t.toml", dir.path(), env).unwrap();
        let Err(e) = build(&loaded) else {
            panic!("built");
        };
        assert!(
            e.to_string().starts_with(
                "t.toml: sink.new (set by MAILCHUTE_SINK__NEW__PATH): missing key `type`"
            ),
            "{e}"
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

    /// A filter type of the tests' own: re-routes to the routes in `to`.
    struct Reroute(Vec<String>);

    impl crate::filters::Filter for Reroute {
        fn apply<'a>(
            &'a self,
            _input: &'a crate::filters::FilterInput<'a>,
        ) -> BoxFuture<'a, Result<crate::filters::Verdict, crate::filters::FilterError>> {
            Box::pin(async { Ok(crate::filters::Verdict::Pass) })
        }

        fn reroutes(&self) -> Vec<String> {
            self.0.clone()
        }
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RerouteConfig {
        to: Vec<String>,
    }

    const TEST_FILTERS: &[(&str, filters::Constructor)] = &[
        ("reroute", |t, ctx| {
            filters::typed(
                t,
                ctx,
                |c: &RerouteConfig, _| Ok(Reroute(c.to.clone())),
                |c| format!("reroute to {}", c.to.join(", ")),
            )
        }),
        ("rewrite", |t, ctx| {
            filters::typed(
                t,
                ctx,
                filters::rewrite::RewriteFilter::new,
                filters::rewrite::summary,
            )
        }),
    ];

    const ROUTES: &str = "\
[[route]]
name = \"a\"
match = [\"@a.test\"]
sinks = [\"m\"]
filters = [\"to-b\"]

[[route]]
name = \"b\"
match = [\"@b.test\"]
sinks = [\"m\"]
filters = [\"to-c\"]

[[route]]
name = \"c\"
match = [\"*\"]
sinks = [\"m\"]

[sink.m]
type = \"discard\"

[filter.to-b]
type = \"reroute\"
to = [\"b\"]
";

    fn build_test(text: &str) -> (String, Result<Pipeline, PipelineError>) {
        let dir = tempfile::tempdir().unwrap();
        let loaded = parse_str(text, "t.toml", dir.path())
            .unwrap_or_else(|e| panic!("the loader already refuses it: {e}"));
        let ctx = SinkContext {
            hostname: "mx.test".into(),
            committer: Arc::new(Committer::new()),
            base_dir: loaded.base_dir.clone(),
        };
        (
            text.to_string(),
            Pipeline::build_with(&loaded, &ctx, TEST_FILTERS, None),
        )
    }

    fn filter_error(text: &str) -> String {
        match build_test(text).1 {
            Err(PipelineError::Filter(e)) => e.to_string(),
            Err(e) => panic!("not a filter error: {e}"),
            Ok(_) => panic!("built:\n{text}"),
        }
    }

    fn line(text: &str, of: &str) -> usize {
        text.lines().position(|l| l.contains(of)).unwrap() + 1
    }

    #[test]
    fn routes_keep_their_filters_in_order() {
        let text = format!(
            "{ROUTES}\n[filter.to-c]\ntype = \"reroute\"\nto = [\"c\"]\nfail_open = true\n"
        );
        let p = build_test(&text).1.unwrap();
        let a = p.route_index("a").unwrap();
        assert_eq!(p.route_name_at(a), "a");
        let names: Vec<&str> = p.filters_of(a).iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["to-b"]);
        let b = p.route_index("b").unwrap();
        assert!(p.filters_of(b)[0].fail_open);
        assert!(!p.filters_of(a)[0].fail_open);
        assert!(p.filters_of(p.route_index("c").unwrap()).is_empty());
        assert_eq!(p.route_index("nope"), None);
        assert_eq!(p.summaries().filters["to-c"], "reroute to c (fail_open)");
        assert_eq!(p.route_of("x@b.test"), Some("b"));
    }

    #[test]
    fn a_reroute_cycle_is_an_error_naming_the_filter() {
        let text = format!("{ROUTES}\n[filter.to-c]\ntype = \"reroute\"\nto = [\"a\"]\n");
        let e = filter_error(&text);
        assert!(
            e.starts_with(&format!(
                "t.toml:{}: filter.to-c: ",
                line(&text, "[filter.to-c]")
            )),
            "{e}"
        );
        assert!(e.contains("a -> b -> a"), "{e}");
        // A filter that re-routes its own route.
        let text = format!("{ROUTES}\n[filter.to-c]\ntype = \"reroute\"\nto = [\"b\"]\n");
        assert!(filter_error(&text).contains("b -> b"));
    }

    #[test]
    fn a_reroute_to_no_route_is_an_error() {
        let text = format!("{ROUTES}\n[filter.to-c]\ntype = \"reroute\"\nto = [\"d\"]\n");
        let e = filter_error(&text);
        assert!(
            e.contains("filter.to-c: re-routes to \"d\", which is not a route (routes: a, b, c)"),
            "{e}"
        );
    }

    #[test]
    fn filter_errors_name_file_line_and_key() {
        let text = format!("{ROUTES}\n[filter.to-c]\ntype = \"scanner\"\n");
        let e = filter_error(&text);
        let want = format!(
            "t.toml:{}: filter.to-c.type: unknown filter type \"scanner\": expected one of reroute, rewrite",
            line(&text, "\"scanner\"")
        );
        assert_eq!(e, want);
        let text = format!("{ROUTES}\n[filter.to-c]\ntype = \"reroute\"\nto = []\ncolour = 1\n");
        let e = filter_error(&text);
        assert!(
            e.starts_with(&format!(
                "t.toml:{}: filter.to-c.colour: unknown key `colour`",
                line(&text, "colour")
            )),
            "{e}"
        );
        let text =
            format!("{ROUTES}\n[filter.to-c]\ntype = \"reroute\"\nto = []\nfail_open = \"yes\"\n");
        let e = filter_error(&text);
        assert!(
            e.starts_with(&format!(
                "t.toml:{}: filter.to-c.fail_open: expected true or false",
                line(&text, "fail_open")
            )),
            "{e}"
        );
        // The real registry: rewrite's keys.
        let text = format!(
            "{BASE}\n[filter.tag]\ntype = \"rewrite\"\nheader = \"Subject\"\npattern = \"^\"\nreplace = \"x\"\nfrom = 1\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let loaded = parse_str(&text, "t.toml", dir.path()).unwrap();
        let Err(PipelineError::Filter(e)) = build(&loaded) else {
            panic!("built");
        };
        assert!(
            e.to_string().starts_with(&format!(
                "t.toml:{}: filter.tag.from: unknown key `from`",
                line(&text, "from = 1")
            )),
            "{e}"
        );
        // The keys every filter has are among those offered.
        assert!(e.to_string().ends_with(", `fail_open`"), "{e}");
    }
}
