//! PROXY protocol v1/v2 header in front of an SMTP session (sans-I/O; `ppp` parses).

use ppp::{HeaderResult, PartialResult, v1, v2};
use std::net::SocketAddr;

/// Longest header we wait for: v1 is at most 107 bytes; v2 is 16 + a length we cap.
pub const MAX_HEADER: usize = 16 + 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Need more bytes.
    Incomplete,
    /// A complete header of `len` bytes. `source` is the real client, `None` for
    /// `UNKNOWN` / `LOCAL` headers (health checks of the balancer itself).
    Done {
        len: usize,
        source: Option<SocketAddr>,
    },
    Invalid(String),
}

pub fn parse(buf: &[u8]) -> Parsed {
    // ppp parses a v1 line before its CRLF has arrived and fails on a half-read port
    // ("... 40000 " → invalid destination port), and calls a whole bad line incomplete:
    // so hand it only whole v1 lines, and judge a whole line it cannot finish as invalid.
    const V1_MAX: usize = 107;
    if buf.starts_with(b"PROXY") || b"PROXY".starts_with(buf) {
        let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
            return if buf.len() >= V1_MAX {
                Parsed::Invalid("PROXY v1 header longer than 107 bytes".into())
            } else {
                Parsed::Incomplete
            };
        };
        let line = &buf[..=lf];
        let result = HeaderResult::parse(line);
        if result.is_incomplete() {
            return Parsed::Invalid(format!(
                "bad PROXY v1 header {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        return finish(result);
    }
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return if buf.len() >= MAX_HEADER {
            Parsed::Invalid("PROXY header too long".into())
        } else {
            Parsed::Incomplete
        };
    }
    finish(result)
}

fn finish(result: HeaderResult<'_>) -> Parsed {
    match result {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            };
            Parsed::Done {
                len: h.header.len(),
                source,
            }
        }
        HeaderResult::V2(Ok(h)) => {
            // LOCAL: the balancer speaks for itself (health checks); the spec says the
            // receiver must use the real connection endpoints and ignore any addresses.
            let source = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            };
            Parsed::Done {
                len: h.len(),
                source,
            }
        }
        HeaderResult::V1(Err(e)) => Parsed::Invalid(format!("bad PROXY v1 header: {e}")),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(format!("bad PROXY v2 header: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO x\r\n";
        assert_eq!(
            parse(h),
            Parsed::Done {
                len: 44,
                source: Some("192.0.2.1:56324".parse().unwrap())
            }
        );
        for i in 1..44 {
            assert_eq!(
                parse(&h[..i]),
                Parsed::Incomplete,
                "{:?}",
                String::from_utf8_lossy(&h[..i])
            );
        }
        assert!(matches!(
            parse(b"PROXY TCP4 not-an-address\r\n"),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn v2_tcp4() {
        let mut h = vec![
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
        ];
        h.extend([0x21, 0x11, 0x00, 12]);
        h.extend([192, 0, 2, 1, 198, 51, 100, 2]);
        h.extend(56324u16.to_be_bytes());
        h.extend(25u16.to_be_bytes());
        assert_eq!(
            parse(&h),
            Parsed::Done {
                len: 28,
                source: Some("192.0.2.1:56324".parse().unwrap())
            }
        );
        assert_eq!(parse(&h[..14]), Parsed::Incomplete);
    }

    /// A v2 header: signature, then `ver_cmd`, family/protocol 0x11 (TCP over IPv4) and an
    /// address block 192.0.2.1:56324 → 198.51.100.2:25.
    fn v2_tcp4_header(ver_cmd: u8) -> Vec<u8> {
        let mut h = vec![
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
        ];
        h.extend([ver_cmd, 0x11, 0x00, 12]);
        h.extend([192, 0, 2, 1, 198, 51, 100, 2]);
        h.extend(56324u16.to_be_bytes());
        h.extend(25u16.to_be_bytes());
        h
    }

    #[test]
    fn v2_local_ignores_the_address_block() {
        // haproxy proxy-protocol.txt 2.2: for LOCAL "the receiver must accept this
        // connection as valid and must use the real connection endpoints and discard the
        // protocol block including the family", even when the sender filled it in.
        assert_eq!(
            parse(&v2_tcp4_header(0x20)),
            Parsed::Done {
                len: 28,
                source: None
            }
        );
        assert_eq!(
            parse(&v2_tcp4_header(0x21)),
            Parsed::Done {
                len: 28,
                source: Some("192.0.2.1:56324".parse().unwrap())
            }
        );
    }

    #[test]
    fn garbage_is_invalid() {
        assert!(matches!(parse(b"EHLO example.org\r\n"), Parsed::Invalid(_)));
    }
}
