//! `mailchute::proto::proxy_header::parse` on arbitrary bytes and on every prefix of them,
//! as the listener calls it (one byte read at a time until the answer is not `Incomplete`).
//!
//! Invariants: no panic; `Done { len }` never claims more than the buffer; and at the first
//! prefix that is not `Incomplete`, a `Done` header is exactly that prefix — the listener
//! reads byte by byte and drops the buffer after the header, so a shorter `len` would lose
//! the client's first bytes and a longer one cannot be.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailchute::proto::proxy_header::{MAX_HEADER, Parsed, parse};

fuzz_target!(|data: &[u8]| {
    if let Parsed::Done { len, .. } = parse(data) {
        assert!(
            len <= data.len(),
            "Done {{ len: {len} }} of {} bytes",
            data.len()
        );
    }
    let mut decided = false;
    for end in 1..=data.len() {
        match parse(&data[..end]) {
            Parsed::Incomplete => {
                assert!(end < MAX_HEADER, "still Incomplete after {end} bytes");
            }
            Parsed::Done { len, .. } => {
                assert!(len <= end, "Done {{ len: {len} }} of {end} bytes");
                if !decided {
                    assert_eq!(len, end, "first Done at {end} bytes claims {len}");
                }
                decided = true;
            }
            Parsed::Invalid(_) => decided = true,
        }
        if decided {
            // Like the listener: stop at the first answer (later prefixes are never seen).
            break;
        }
    }
});
