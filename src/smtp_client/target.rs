//! Where the server listens: `host:port`, `[v6]:port` or `unix:/absolute/path`.

use std::fmt;
use std::path::PathBuf;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host` has no brackets, also for IPv6.
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
}

impl Target {
    /// "host:port", "[v6]:port" or "unix:/absolute/path".
    pub fn parse(address: &str) -> Result<Target, String> {
        if let Some(path) = address.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "address \"{address}\": expected unix:/absolute/path"
                ));
            }
            return Ok(Target::Unix(path));
        }
        let bad = || {
            format!("address \"{address}\": expected host:port, [ipv6]:port or unix:/absolute/path")
        };
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(bad)?;
        let host = match host.strip_prefix('[') {
            Some(h) => h.strip_suffix(']').ok_or_else(bad)?,
            // An IPv6 address needs brackets, or "::1:25" would be ambiguous.
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        if host.is_empty() || host.contains(['[', ']', ' ', '/']) {
            return Err(bad());
        }
        Ok(Target::Tcp {
            host: host.to_string(),
            port,
        })
    }

    /// The host part, to check a certificate against.
    pub fn host(&self) -> Option<&str> {
        match self {
            Target::Tcp { host, .. } => Some(host),
            Target::Unix(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            Target::parse("127.0.0.1:25").unwrap(),
            Target::Tcp {
                host: "127.0.0.1".into(),
                port: 25
            }
        );
        assert_eq!(
            Target::parse("[::1]:24").unwrap().to_string(),
            "[::1]:24".to_string()
        );
        assert_eq!(Target::parse("[::1]:24").unwrap().host(), Some("::1"));
        assert_eq!(
            Target::parse("mx.example.org:587").unwrap().host(),
            Some("mx.example.org")
        );
        assert_eq!(
            Target::parse("unix:/run/dovecot/lmtp").unwrap(),
            Target::Unix("/run/dovecot/lmtp".into())
        );
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:99999",
            ":25",
            "::1:25",
            "[::1:25",
            "unix:relative/path",
            "a b:25",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
    }
}
