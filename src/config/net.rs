//! Address helpers shared by config validation and the listener layer.

use super::types::ListenerConfig;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Where a listener (or a relay sink) connects: a TCP socket address or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

const ADDRESS_EXPECTED: &str = "expected \"IP:port\" (e.g. \"127.0.0.1:2525\", \"[::1]:2525\", \
                                \"0.0.0.0:25\") or \"unix:/path/to/socket\"";

impl ListenAddr {
    /// `host:port` with an IP literal, or `unix:PATH`. Host names are refused: a listener
    /// binds an address, and a name could resolve to several or to a different one later.
    pub fn parse(s: &str) -> Result<ListenAddr, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!(
                    "{s:?}: the socket path is empty; {ADDRESS_EXPECTED}"
                ));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(ListenAddr::Tcp)
            .map_err(|_| format!("{s:?}: {ADDRESS_EXPECTED}"))
    }
}

/// An allow-list of networks (`allow_ips`, `trusted`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList(Vec<IpNet>);

/// One entry of an address list that is neither an IP address nor a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?}: expected an IP address or a CIDR like \"10.0.0.0/8\" or \"2001:db8::/32\"")]
pub struct BadNet {
    /// Position in the list, so the error can name `allow_ips[2]`.
    pub index: usize,
    pub entry: String,
}

impl IpList {
    pub fn parse(entries: &[String]) -> Result<IpList, BadNet> {
        entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let t = entry.trim();
                t.parse::<IpNet>()
                    .map(|n| n.trunc())
                    .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                    .map(canonical_net)
                    .map_err(|_| BadNet {
                        index,
                        entry: entry.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(IpList)
    }

    /// Whether `ip` is in one of the networks. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
    /// what a dual-stack socket reports for an IPv4 client) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

/// An IPv4-mapped network (`::ffff:10.0.0.0/104`, or `::ffff:10.1.2.3` copied from a
/// dual-stack log) as the IPv4 network it means: [`IpList::contains`] compares IPv4
/// clients as IPv4, so the mapped form would otherwise never match anyone.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// A listener only reachable from this host: a Unix socket, or a TCP address on loopback.
/// (`0.0.0.0` / `[::]` are every interface, so not loopback.) An address that does not
/// parse counts as not loopback: the stricter answer.
pub fn is_loopback_listener(listener: &ListenerConfig) -> bool {
    match ListenAddr::parse(&listener.address) {
        Ok(ListenAddr::Unix(_)) => true,
        Ok(ListenAddr::Tcp(sa)) => canonical(sa.ip()).is_loopback(),
        Err(_) => false,
    }
}

/// Whether a message that dies in the queue is bounced to its sender: `dsn` if set, else
/// on for mail from outside (a TCP listener not on loopback).
pub fn dsn_enabled(listener: &ListenerConfig) -> bool {
    listener.dsn.unwrap_or(!is_loopback_listener(listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Result<IpList, BadNet> {
        IpList::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn ip_lists() {
        let l = list(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]).unwrap();
        assert!(l.contains("10.1.2.3".parse().unwrap()));
        assert!(l.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(l.contains("192.0.2.7".parse().unwrap()));
        assert!(!l.contains("192.0.2.8".parse().unwrap()));
        assert!(l.contains("2001:db8::1".parse().unwrap()));
        assert!(!l.contains("2001:db9::1".parse().unwrap()));
        let e = list(&["10.0.0.0/8", "nope"]).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.to_string().contains("\"nope\""));
        assert!(list(&["10.0.0.0/33"]).is_err());
    }

    #[test]
    fn mapped_entries_mean_their_ipv4_address() {
        let l = list(&["::ffff:10.1.2.3", "::ffff:192.0.2.0/120"]).unwrap();
        assert!(l.contains("10.1.2.3".parse().unwrap()));
        assert!(l.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!l.contains("10.1.2.4".parse().unwrap()));
        assert!(l.contains("192.0.2.200".parse().unwrap()));
        assert!(!l.contains("192.0.3.1".parse().unwrap()));
        assert_eq!(l.nets()[1].to_string(), "192.0.2.0/24");
        // Wider than the mapped range: left as IPv6.
        let l = list(&["::/0"]).unwrap();
        assert!(l.contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn loopback() {
        let mk = |a: &str| {
            let mut l: ListenerConfig = toml::from_str(&format!("address = {a:?}")).unwrap();
            l.address = a.to_string();
            l
        };
        assert!(is_loopback_listener(&mk("127.0.0.1:25")));
        assert!(is_loopback_listener(&mk("[::1]:25")));
        assert!(is_loopback_listener(&mk("unix:/run/x.sock")));
        assert!(!is_loopback_listener(&mk("0.0.0.0:25")));
        assert!(!is_loopback_listener(&mk("[::]:25")));
        assert!(!is_loopback_listener(&mk("192.0.2.1:25")));
        assert!(!is_loopback_listener(&mk("localhost:25")));
        assert!(ListenAddr::parse("unix:").is_err());
        assert!(ListenAddr::parse("mx.example.org:25").is_err());
    }
}
