//! `mailchute::proto::parse_command` on arbitrary bytes: never panics; parsed addresses and
//! names carry no CR, LF or NUL (they end up in headers, logs and an upstream's commands);
//! every error's reply renders as one well-formed line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailchute::proto::{Command, parse_command};

fn clean(what: &str, s: &str) {
    assert!(!s.contains(['\r', '\n', '\0']), "{what} {s:?}");
}

fuzz_target!(|data: &[u8]| {
    match parse_command(data) {
        Ok(Command::Mail { from, .. }) => clean("MAIL address", &from),
        Ok(Command::Rcpt { to }) => {
            clean("RCPT address", &to);
            assert!(!to.is_empty(), "empty RCPT address");
        }
        Ok(Command::Ehlo(name) | Command::Helo(name) | Command::Lhlo(name)) => {
            clean("HELO name", &name);
            assert!(
                !name.is_empty() && !name.contains([' ', '\t']),
                "HELO name {name:?}"
            );
        }
        Ok(Command::XForward(attrs)) => {
            assert!(!attrs.is_empty());
            for (_, value) in attrs {
                assert!(
                    !value.chars().any(char::is_control),
                    "XFORWARD value {value:?}"
                );
            }
        }
        Ok(_) => {}
        Err(e) => {
            let wire = e.reply().render();
            assert!(wire.ends_with(b"\r\n"));
            let body = &wire[..wire.len() - 2];
            assert!(
                !body.contains(&b'\r') && !body.contains(&b'\n'),
                "error reply {:?}",
                String::from_utf8_lossy(&wire)
            );
            assert!(body.len() >= 3 && (body[0] == b'5' || body[0] == b'4'));
        }
    }
});
