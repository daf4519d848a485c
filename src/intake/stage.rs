//! The filter stage: each route's filters, in order, once per route and message, before
//! the client is answered (DESIGN.md "Filters"). Recipients that share a route share one
//! run. A filter may pass, change the body, reject, re-route to another route (whose
//! filters and sinks take over) or discard; a temporary failure fails that route's
//! recipients for now unless the filter is `fail_open`.

use crate::delivery::SinkError;
use crate::envelope::Envelope;
use crate::filters::{FilterInput, Verdict};
use crate::pipeline::Pipeline;
use crate::spool::{BodyFile, Pending, body_path};
use std::path::Path;

/// What became of one route's recipients.
#[derive(Debug)]
pub enum RouteOutcome {
    /// To these delivery units (the sinks of the route the recipients ended on).
    Deliver(Vec<Pending>),
    /// Refused for good by a filter.
    Rejected(SinkError),
    /// A filter failed for now: the client must retry; nothing of it is kept.
    Deferred(SinkError),
    /// Accepted and delivered nowhere (the trail says why).
    Discarded,
}

pub struct RouteResult {
    /// The route the recipients matched.
    pub first_route: String,
    /// The route they ended on (another one after a re-route).
    pub route: String,
    pub rcpts: Vec<String>,
    pub outcome: RouteOutcome,
    /// What the filters did, for the transaction line (`name verdict`).
    pub trail: Vec<String>,
}

pub struct Filtered {
    pub routes: Vec<RouteResult>,
    /// The changed bodies the units deliver, beside the message as `ID.NAME.eml`.
    pub bodies: Vec<BodyFile>,
}

impl Filtered {
    /// Every delivery unit, in route order.
    pub fn units(&self) -> Vec<Pending> {
        self.routes
            .iter()
            .filter_map(|r| match &r.outcome {
                RouteOutcome::Deliver(units) => Some(units.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Removes the changed bodies (the message was refused, or kept nowhere).
    pub async fn discard_bodies(&self, message: &Path) {
        self.discard_bodies_except(message, &[]).await;
    }

    /// Removes the changed bodies beside `message` except those `keep` names.
    pub async fn discard_bodies_except(&self, message: &Path, keep: &[BodyFile]) {
        for b in self.bodies.iter().filter(|b| !keep.contains(b)) {
            remove(&body_path(message, Some(&b.name))).await;
        }
    }

    /// Removes the changed bodies no unit of `units` delivers any more.
    pub async fn keep_bodies_of(&mut self, message: &Path, units: &[Pending]) {
        let (used, unused): (Vec<BodyFile>, Vec<BodyFile>) = std::mem::take(&mut self.bodies)
            .into_iter()
            .partition(|b| units.iter().any(|u| u.body.as_deref() == Some(&b.name)));
        for b in unused {
            remove(&body_path(message, Some(&b.name))).await;
        }
        self.bodies = used;
    }
}

/// Runs the filters of every route of `envelope` over `message`. `Err` only when a
/// recipient has no route any more (a reload between RCPT and the end of DATA).
pub async fn run(
    pipeline: &Pipeline,
    envelope: &Envelope,
    message: &Path,
) -> Result<Filtered, String> {
    let groups = pipeline.group_by_route(&envelope.rcpts)?;
    let mut filtered = Filtered {
        routes: Vec::new(),
        bodies: Vec::new(),
    };
    let mut next_unit = 0;
    let mut next_body = 0;
    for (route, rcpts) in groups {
        let mut trail = Vec::new();
        let mut ended_on = route;
        let outcome = run_route(
            pipeline,
            envelope,
            message,
            route,
            &rcpts,
            &mut next_unit,
            &mut next_body,
            &mut filtered.bodies,
            &mut trail,
            &mut ended_on,
        )
        .await;
        filtered.routes.push(RouteResult {
            first_route: pipeline.route_name_at(route).to_string(),
            route: pipeline.route_name_at(ended_on).to_string(),
            rcpts,
            outcome,
            trail,
        });
    }
    Ok(filtered)
}

#[allow(clippy::too_many_arguments)]
async fn run_route(
    pipeline: &Pipeline,
    envelope: &Envelope,
    message: &Path,
    first_route: usize,
    rcpts: &[String],
    next_unit: &mut usize,
    next_body: &mut usize,
    bodies: &mut Vec<BodyFile>,
    trail: &mut Vec<String>,
    ended_on: &mut usize,
) -> RouteOutcome {
    let mut route = first_route;
    let mut visited = vec![route];
    // The body so far: `None` = the message as received; else a name in `bodies`.
    let mut body: Option<String> = None;
    'route: loop {
        for built in pipeline.filters_of(route) {
            let current = body_path(message, body.as_deref());
            *next_body += 1;
            let name = format!("f{next_body}");
            let output = body_path(message, Some(&name));
            remove(&output).await;
            let input = FilterInput {
                envelope,
                route: pipeline.route_name_at(route),
                rcpts,
                body: &current,
                output: &output,
            };
            let verdict = built.filter.apply(&input).await;
            if !matches!(verdict, Ok(Verdict::Changed)) {
                remove(&output).await;
            }
            match verdict {
                Ok(Verdict::Pass) => trail.push(format!("{} pass", built.name)),
                Ok(Verdict::Changed) => {
                    let size = match tokio::fs::metadata(&output).await {
                        Ok(m) => m.len(),
                        Err(e) => {
                            remove(&output).await;
                            let e = SinkError::from_io(
                                format!("filter {}: its output {}", built.name, output.display()),
                                &e,
                            );
                            trail.push(format!("{} deferred {e}", built.name));
                            return RouteOutcome::Deferred(SinkError::temporary(
                                &e.status,
                                "Temporary local problem, try again later",
                            ));
                        }
                    };
                    // The body it replaces is no unit's any more.
                    if let Some(old) = body.take() {
                        remove(&current).await;
                        bodies.retain(|b| b.name != old);
                    }
                    bodies.push(BodyFile {
                        name: name.clone(),
                        size,
                    });
                    body = Some(name);
                    trail.push(format!("{} changed", built.name));
                }
                Ok(Verdict::Reject { status, text }) => {
                    trail.push(format!("{} rejected {status} {text}", built.name));
                    return RouteOutcome::Rejected(SinkError::permanent(&status, text));
                }
                Ok(Verdict::Discard { reason }) => {
                    trail.push(format!("{} discarded ({reason})", built.name));
                    return RouteOutcome::Discarded;
                }
                Ok(Verdict::Reroute { route: to }) => {
                    let next = match pipeline.route_index(&to) {
                        Some(next) if !visited.contains(&next) => next,
                        // The build refuses both; a filter that names routes of its own
                        // making is deferred, with the detail for the operator only.
                        found => {
                            let problem = match found {
                                None => format!("re-routes to {to:?}, which is not a route"),
                                Some(_) => format!("re-routes back to route {to:?}"),
                            };
                            trail.push(format!("{} deferred 4.3.5 {problem}", built.name));
                            return RouteOutcome::Deferred(SinkError::temporary(
                                "4.3.5",
                                "Temporary failure while checking the message, try again later",
                            ));
                        }
                    };
                    trail.push(format!("{} re-routed to {to}", built.name));
                    visited.push(next);
                    route = next;
                    *ended_on = next;
                    continue 'route;
                }
                Err(e) if built.fail_open => {
                    tracing::warn!(id = %envelope.id, filter = %built.name, error = %e, "filter failed; fail_open passes the message on");
                    trail.push(format!("{} failed open ({e})", built.name));
                }
                Err(e) => {
                    // The detail (paths, a scanner's address) is the operator's: it goes
                    // to the transaction line; the client hears that it should retry.
                    trail.push(format!("{} deferred {e}", built.name));
                    return RouteOutcome::Deferred(SinkError::temporary(
                        &e.status,
                        "Temporary failure while checking the message, try again later",
                    ));
                }
            }
        }
        return RouteOutcome::Deliver(pipeline.units_for(
            &envelope.id,
            route,
            rcpts,
            body.as_deref(),
            next_unit,
        ));
    }
}

/// Removes a filtered body (on the blocking pool, as every spool file operation).
async fn remove(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a filtered body");
    }
}
