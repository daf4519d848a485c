//! The SMTP client's reply parser `mailchute::proto::parse_reply`, reading a
//! stream of pipelined replies as `smtp_client` does.
//!
//! Invariants: no panic; a parsed reply used `0 < n <= len` bytes ending in LF, has a
//! three-digit code and at least one line, without control characters but TAB; parsing
//! just those `n` bytes gives the same reply, and one byte fewer says "read more"
//! (`Ok(None)`), so the result does not depend on how the bytes arrived.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailchute::proto::parse_reply;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while let Ok(Some((reply, n))) = parse_reply(buf) {
        assert!(n > 0 && n <= buf.len(), "used {n} of {} bytes", buf.len());
        assert_eq!(buf[n - 1], b'\n', "reply does not end at a line end");
        assert!(reply.code <= 999);
        assert!(!reply.lines.is_empty());
        for line in &reply.lines {
            assert!(
                !line.chars().any(|c| c.is_control() && c != '\t'),
                "control character in line {line:?}"
            );
        }
        let _ = reply.enhanced();
        let _ = reply.is_positive();
        let one = reply.one_line();
        assert!(!one.contains('\n'), "one_line {one:?}");
        match parse_reply(&buf[..n]) {
            Ok(Some((again, m))) => {
                assert_eq!(m, n);
                assert_eq!(again, reply);
            }
            other => panic!("the reply's own bytes parse as {other:?}"),
        }
        assert!(
            matches!(parse_reply(&buf[..n - 1]), Ok(None)),
            "a reply cut one byte short is not Incomplete"
        );
        buf = &buf[n..];
    }
});
