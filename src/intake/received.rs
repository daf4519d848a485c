//! The `Received:` trace header we prepend (RFC 5321 §4.4, protocol names of RFC 3848).

use crate::envelope::ClientInfo;

/// Builds the header, folded, CRLF-terminated. `client.protocol` is the `with` keyword.
pub fn header(
    client: &ClientInfo,
    hostname: &str,
    id: &str,
    rcpts: &[String],
    date: &str,
) -> String {
    let helo = clean(client.helo.as_deref().unwrap_or("unknown"));
    let mut from = String::new();
    let xf = &client.xforward;
    if xf.addr.is_some() || xf.helo.is_some() {
        // A trusted MTA told us who its client was: that is the hop worth recording.
        let xhelo = clean(xf.helo.as_deref().unwrap_or(&helo));
        let xname = clean(xf.name.as_deref().unwrap_or("unknown"));
        let xaddr = clean(xf.addr.as_deref().unwrap_or("unknown"));
        from.push_str(&format!("{xhelo} ({xname} [{xaddr}])"));
        let via = client
            .addr
            .as_deref()
            .map(|a| clean(addr_ip(a)))
            .unwrap_or_else(|| "local".into());
        from.push_str(&format!("\r\n\t(forwarded by {helo} [{via}])"));
    } else {
        match (&client.addr, client.uid) {
            (Some(addr), _) => {
                let ip = addr_ip(addr);
                from.push_str(&format!("{helo} ([{}])", clean(ip)));
                if let Some(lb) = &client.proxied_by {
                    from.push_str(&format!("\r\n\t(via proxy [{}])", clean(addr_ip(lb))));
                }
            }
            (None, Some(uid)) => from.push_str(&format!("{helo} (uid {uid})")),
            (None, None) => from.push_str(&format!("{helo} (local)")),
        }
    }
    // As Postfix's smtpd_sasl_authenticated_header writes it; the protocol then ends in
    // "A" (ESMTPA, ESMTPSA).
    if let Some(user) = &client.auth_user {
        from.push_str(&format!("\r\n\t(Authenticated sender: {})", clean(user)));
    }
    let mut h = format!(
        "Received: from {from}\r\n\tby {hostname} (mailchute) with {} id {id}",
        client.protocol
    );
    if let Some(tls) = &client.tls {
        h.push_str(&format!("\r\n\t({})", clean(tls)));
    }
    // "for" only with a single recipient: listing several would disclose Bcc recipients.
    if let [rcpt] = rcpts {
        h.push_str(&format!("\r\n\tfor <{}>", clean(rcpt)));
    }
    h.push_str(&format!(";\r\n\t{date}\r\n"));
    h
}

/// RFC 2822 date in the local time zone.
pub fn now_rfc2822() -> String {
    let now = jiff::Zoned::now();
    jiff::fmt::rfc2822::to_string(&now).unwrap_or_else(|_| now.timestamp().to_string())
}

fn addr_ip(addr: &str) -> &str {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(_) => addr
            .rsplit_once(':')
            .map(|(ip, _)| ip.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(addr),
        Err(_) => addr,
    }
}

/// Keeps a header value on one line and free of control characters whatever a client sent.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '?'
            } else {
                c
            }
        })
        .take(255)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_client() {
        let c = ClientInfo {
            addr: Some("192.0.2.7:4567".into()),
            helo: Some("client.example".into()),
            protocol: "ESMTPS".into(),
            tls: Some("TLSv1.3 TLS13_AES_128_GCM_SHA256".into()),
            ..Default::default()
        };
        let h = header(
            &c,
            "mx.test",
            "ID1",
            &["a@b".into()],
            "Sun, 22 Nov 2026 02:25:28 +0000",
        );
        assert_eq!(
            h,
            "Received: from client.example ([192.0.2.7])\r\n\tby mx.test (mailchute) with ESMTPS id ID1\r\n\t(TLSv1.3 TLS13_AES_128_GCM_SHA256)\r\n\tfor <a@b>;\r\n\tSun, 22 Nov 2026 02:25:28 +0000\r\n"
        );
    }

    #[test]
    fn authenticated_client() {
        let c = ClientInfo {
            addr: Some("192.0.2.7:4567".into()),
            helo: Some("app.example".into()),
            protocol: "ESMTPSA".into(),
            auth_user: Some("app\r\nX: y".into()),
            ..Default::default()
        };
        let h = header(&c, "mx.test", "ID1", &[], "date");
        assert_eq!(
            h,
            "Received: from app.example ([192.0.2.7])\r\n\t(Authenticated sender: app??X: y)\r\n\tby mx.test (mailchute) with ESMTPSA id ID1;\r\n\tdate\r\n"
        );
    }

    #[test]
    fn xforward_and_hostile_helo() {
        let mut c = ClientInfo {
            addr: Some("[::1]:25".into()),
            helo: Some("evil\r\nX-Injected: 1".into()),
            protocol: "ESMTP".into(),
            ..Default::default()
        };
        c.xforward.addr = Some("198.51.100.9".into());
        c.xforward.helo = Some("orig.example".into());
        let h = header(&c, "mx", "ID", &[], "date");
        assert!(h.starts_with("Received: from orig.example (unknown [198.51.100.9])\r\n\t(forwarded by evil??X-Injected: 1 [::1])"));
        assert_eq!(h.matches("\r\n").count(), h.matches("\r\n\t").count() + 1);
    }
}
