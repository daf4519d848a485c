//! Recipient → route. Precedence is by kind across all routes (DESIGN "Contract details"):
//! exact address, then `@domain`, then `/regex/` in file order, then `*`.

use crate::config::{LocalPartCase, MatchRule, RouteConfig};
use crate::envelope::{split_address, unquote_local};
use regex::Regex;
use std::collections::HashMap;

#[derive(Debug)]
pub struct Router {
    /// Normalised address → route index.
    exact: HashMap<String, usize>,
    /// Lower-cased domain → route index.
    domains: HashMap<String, usize>,
    regexes: Vec<(Regex, usize)>,
    catch_all: Option<usize>,
    local_part_case: LocalPartCase,
}

#[derive(Debug, thiserror::Error)]
#[error("route {route}: match entry {entry:?}: {message}")]
pub struct RouterError {
    pub route: String,
    pub entry: String,
    pub message: String,
}

/// The name a route is known by in logs and the spool.
pub fn route_name(route: &RouteConfig, index: usize) -> String {
    route
        .name
        .clone()
        .unwrap_or_else(|| format!("route-{index}"))
}

impl Router {
    pub fn new(
        routes: &[RouteConfig],
        local_part_case: LocalPartCase,
    ) -> Result<Router, RouterError> {
        let mut router = Router {
            exact: HashMap::new(),
            domains: HashMap::new(),
            regexes: Vec::new(),
            catch_all: None,
            local_part_case,
        };
        for (index, route) in routes.iter().enumerate() {
            for entry in &route.matches {
                let rule = MatchRule::parse(entry.trim()).map_err(|message| RouterError {
                    route: route_name(route, index),
                    entry: entry.clone(),
                    message,
                })?;
                match rule {
                    MatchRule::Any => {
                        router.catch_all.get_or_insert(index);
                    }
                    MatchRule::Domain(domain) => {
                        router
                            .domains
                            .entry(domain.to_ascii_lowercase())
                            .or_insert(index);
                    }
                    MatchRule::Regex(re) => router.regexes.push((re, index)),
                    MatchRule::Exact(addr) => {
                        let key = router.normalise(&addr);
                        router.exact.entry(key).or_insert(index);
                    }
                }
            }
        }
        Ok(router)
    }

    /// Address with the domain lower-cased (and the local part too when configured).
    pub fn normalise(&self, addr: &str) -> String {
        let (local, domain) = split_address(addr);
        let local = unquote_local(local);
        let local = match self.local_part_case {
            LocalPartCase::Sensitive => local.into_owned(),
            LocalPartCase::Insensitive => local.to_lowercase(),
        };
        if domain.is_empty() && !addr.contains('@') {
            local
        } else {
            format!("{local}@{}", domain.to_lowercase())
        }
    }

    /// The index of the route `rcpt` belongs to, if any.
    pub fn route(&self, rcpt: &str) -> Option<usize> {
        let norm = self.normalise(rcpt);
        if let Some(&i) = self.exact.get(&norm) {
            return Some(i);
        }
        let (_, domain) = split_address(&norm);
        if let Some(&i) = self.domains.get(domain) {
            return Some(i);
        }
        if let Some((_, i)) = self.regexes.iter().find(|(re, _)| re.is_match(&norm)) {
            return Some(*i);
        }
        self.catch_all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, m: &[&str]) -> RouteConfig {
        RouteConfig {
            name: Some(name.into()),
            matches: m.iter().map(|s| s.to_string()).collect(),
            filters: vec![],
            sinks: vec!["s".into()],
        }
    }

    #[test]
    fn precedence_is_by_kind_not_file_order() {
        let routes = vec![
            route("all", &["*"]),
            route("re", &["/^bounce-.*@/"]),
            route("dom", &["@Example.org"]),
            route("alice", &["alice@example.org"]),
        ];
        let r = Router::new(&routes, LocalPartCase::Sensitive).unwrap();
        assert_eq!(r.route("alice@EXAMPLE.org"), Some(3));
        assert_eq!(r.route("Alice@example.org"), Some(2));
        assert_eq!(r.route("bounce-1@example.org"), Some(2));
        assert_eq!(r.route("bounce-1@other.net"), Some(1));
        assert_eq!(r.route("x@other.net"), Some(0));
        assert_eq!(r.route("\"alice\"@example.org"), Some(3));
    }

    #[test]
    fn insensitive_local_part() {
        let routes = vec![route("alice", &["alice@example.org"])];
        let r = Router::new(&routes, LocalPartCase::Insensitive).unwrap();
        assert_eq!(r.route("ALICE@example.org"), Some(0));
        assert_eq!(r.route("bob@example.org"), None);
    }

    #[test]
    fn bad_entries_are_errors() {
        assert!(Router::new(&[route("x", &["/(/"])], LocalPartCase::Sensitive).is_err());
        assert!(Router::new(&[route("x", &["nobody"])], LocalPartCase::Sensitive).is_err());
        assert!(Router::new(&[route("x", &["@"])], LocalPartCase::Sensitive).is_err());
    }
}
