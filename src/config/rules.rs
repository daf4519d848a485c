//! The four kinds of route `match` entries and their precedence (DESIGN "Contract details").

use regex::Regex;

/// One `match` entry of a route.
#[derive(Debug, Clone)]
pub enum MatchRule {
    /// `alice@example.org`: one address.
    Exact(String),
    /// `@example.org`: every address in the domain (the domain without the `@`).
    Domain(String),
    /// `/^bounce-.*@/`: a regex on the whole address; the original text is kept for display.
    Regex(Regex),
    /// `*`: anything.
    Any,
}

impl MatchRule {
    pub fn parse(entry: &str) -> Result<MatchRule, String> {
        const EXPECTED: &str = "expected an address \"user@example.org\", a domain \
                                \"@example.org\", a regex \"/^bounce-.*@/\" or \"*\"";
        if entry == "*" {
            return Ok(MatchRule::Any);
        }
        if let Some(inner) = entry.strip_prefix('/') {
            let Some(pattern) = inner.strip_suffix('/') else {
                return Err(format!("{entry:?}: a regex must end with `/`; {EXPECTED}"));
            };
            if pattern.is_empty() {
                return Err(format!("{entry:?}: empty regex; {EXPECTED}"));
            }
            return Regex::new(pattern)
                .map(MatchRule::Regex)
                .map_err(|e| format!("{entry:?}: invalid regex: {e}"));
        }
        if entry.chars().any(char::is_whitespace) {
            return Err(format!("{entry:?}: contains white space; {EXPECTED}"));
        }
        if let Some(domain) = entry.strip_prefix('@') {
            if domain.is_empty() || domain.contains('@') {
                return Err(format!("{entry:?}: {EXPECTED}"));
            }
            return Ok(MatchRule::Domain(domain.to_string()));
        }
        match entry.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                Ok(MatchRule::Exact(entry.to_string()))
            }
            _ => Err(format!("{entry:?}: {EXPECTED}")),
        }
    }

    /// Whether `address` is one this entry names: the local part exactly, the domain in any
    /// case (DESIGN "Route precedence"). The null sender (empty) matches only `*` and a
    /// regex that takes it.
    pub fn matches(&self, address: &str) -> bool {
        let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
        match self {
            MatchRule::Any => true,
            MatchRule::Regex(re) => re.is_match(address),
            MatchRule::Domain(d) => !address.is_empty() && d.eq_ignore_ascii_case(domain),
            MatchRule::Exact(addr) => addr
                .rsplit_once('@')
                .is_some_and(|(l, d)| l == local && d.eq_ignore_ascii_case(domain)),
        }
    }

    /// Lower ranks are tried first: exact, then domain, then regex (in file order), then `*`.
    pub fn rank(&self) -> u8 {
        match self {
            MatchRule::Exact(_) => 0,
            MatchRule::Domain(_) => 1,
            MatchRule::Regex(_) => 2,
            MatchRule::Any => 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert!(matches!(MatchRule::parse("*"), Ok(MatchRule::Any)));
        assert!(matches!(
            MatchRule::parse("a@b.org"),
            Ok(MatchRule::Exact(_))
        ));
        assert!(matches!(MatchRule::parse("@b.org"), Ok(MatchRule::Domain(d)) if d == "b.org"));
        assert!(matches!(
            MatchRule::parse("/^x-.*@/"),
            Ok(MatchRule::Regex(_))
        ));
        let rule = |s: &str| MatchRule::parse(s).unwrap();
        assert!(rule("a@B.org").matches("a@b.ORG"));
        assert!(!rule("a@b.org").matches("A@b.org"));
        assert!(rule("@b.org").matches("x@B.org") && !rule("@b.org").matches(""));
        assert!(rule("/^root@/").matches("root@h") && rule("*").matches(""));
        for bad in ["", "b.org", "@", "a@", "/x", "/(/", "a b@c", "@a@b", "//"] {
            assert!(MatchRule::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(
            MatchRule::parse("/(/")
                .unwrap_err()
                .contains("invalid regex")
        );
    }
}
