//! XFORWARD (Postfix's XFORWARD_README): which attributes describe our client, and the
//! command lines that carry those a server advertised.

use crate::envelope::Envelope;
use crate::proto::{Capabilities, xtext};
use std::net::{IpAddr, SocketAddr};

/// XFORWARD command lines may not exceed this (Postfix's limit, CRLF included).
pub const XFORWARD_LINE_MAX: usize = 512;

/// The XFORWARD commands for `attributes`: only those the server advertised in its
/// XFORWARD capability, values xtext-encoded, each line at most [`XFORWARD_LINE_MAX`]
/// bytes (a value too long for any line is left out). Empty when nothing is to be sent.
pub fn xforward_lines(caps: &Capabilities, attributes: &[(&'static str, String)]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::from("XFORWARD");
    for (name, value) in attributes {
        if !caps.has_param("XFORWARD", name) {
            continue;
        }
        let item = format!(" {name}={}", xtext(value));
        if "XFORWARD".len() + item.len() + 2 > XFORWARD_LINE_MAX {
            tracing::debug!(
                attribute = name,
                "XFORWARD value too long to send; left out"
            );
            continue;
        }
        if line.len() + item.len() + 2 > XFORWARD_LINE_MAX {
            lines.push(std::mem::replace(&mut line, String::from("XFORWARD")));
        }
        line.push_str(&item);
    }
    if line.len() > "XFORWARD".len() {
        lines.push(line);
    }
    lines
}

/// What to send with XFORWARD, in Postfix's order: the facts a trusted upstream forwarded
/// to us, unchanged, or else what we know about our own client.
pub fn xforward_attributes(env: &Envelope) -> Vec<(&'static str, String)> {
    let fwd = &env.client.xforward;
    if !fwd.is_empty() {
        return fwd
            .attributes()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
    }
    let client = &env.client;
    let (addr, port) = match client.addr.as_deref() {
        Some(a) => match a.parse::<SocketAddr>() {
            Ok(sa) => (Some(sa.ip()), Some(sa.port())),
            Err(_) => (a.parse::<IpAddr>().ok(), None),
        },
        None => (None, None),
    };
    let mut attrs = vec![("NAME", "[UNAVAILABLE]".to_string())];
    if let Some(ip) = addr {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => format!("IPv6:{v6}"),
            },
            IpAddr::V4(v4) => v4.to_string(),
        };
        attrs.push(("ADDR", ip));
    }
    if let Some(port) = port {
        attrs.push(("PORT", port.to_string()));
    }
    attrs.push(("PROTO", xforward_proto(&client.protocol).to_string()));
    if let Some(helo) = &client.helo {
        attrs.push(("HELO", helo.clone()));
    }
    attrs.push(("IDENT", env.id.clone()));
    let source = if client.addr.is_some() {
        "REMOTE"
    } else {
        "LOCAL"
    };
    attrs.push(("SOURCE", source.to_string()));
    attrs
}

/// PROTO for the protocol our client spoke, as the ingress names it for the Received
/// header: "SMTP", "ESMTP", "ESMTPS", "LMTP", "LMTPS" (RFC 3848; compared ignoring case).
///
/// The base name, without RFC 3848's TLS/AUTH suffixes (they describe the hop, not the
/// protocol), as Postfix's own smtpd keeps and forwards it ("proto=ESMTP" in its logs).
/// The XFORWARD README allows any protocol name, so LMTP stays LMTP. What no client spoke
/// to us (our own DSNs are "local") is `[UNAVAILABLE]`.
fn xforward_proto(protocol: &str) -> &'static str {
    let p = protocol.to_ascii_uppercase();
    if p.starts_with("ESMTP") {
        "ESMTP"
    } else if p.starts_with("LMTP") {
        "LMTP"
    } else if p == "SMTP" {
        "SMTP"
    } else {
        "[UNAVAILABLE]"
    }
}
