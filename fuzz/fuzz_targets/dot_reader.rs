//! The DATA decoder (`mailchute::proto::DotReader`): the same bytes decoded whole, in
//! fuzz-chosen pieces and byte by byte give the same message, the same end position and the
//! same limit flags; without limits the message equals a direct transcription of
//! RFC 5321 4.5.2 (only CRLF.CRLF ends; a dot that starts a line after CRLF is dropped).
//!
//! Input layout: byte 0 = number of split points (mod 8), then 2 bytes per split point,
//! then 1 byte size limit and 1 byte line limit (0 = unlimited), then the data.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailchute::proto::{DotReader, DotStep};

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    message: Vec<u8>,
    /// Offset just past the terminator, when seen.
    end: Option<usize>,
    too_big: bool,
    line_too_long: bool,
    size: u64,
}

/// Decodes `input` delivered in the pieces that `cuts` (ascending offsets) make, the way
/// the session does: unconsumed bytes are kept and handed again with the next piece.
fn decode(input: &[u8], cuts: &[usize], max_size: u64, max_line: u64) -> Decoded {
    let mut r = DotReader::new(max_size, max_line);
    let mut message = Vec::new();
    let mut consumed = 0usize; // absolute offset of the first unconsumed byte
    let mut end = None;
    let mut bounds: Vec<usize> = cuts.to_vec();
    bounds.push(input.len());
    'pieces: for &avail_end in &bounds {
        loop {
            let window = &input[consumed..avail_end];
            let (n, step) = r.step(window);
            assert!(n <= window.len(), "consumed {n} of {} bytes", window.len());
            match step {
                DotStep::Data(range) => {
                    assert!(range.start < range.end, "empty Data {range:?}");
                    assert!(range.end <= n, "Data {range:?} beyond the consumed {n}");
                    message.extend_from_slice(&window[range]);
                }
                DotStep::Cr => message.push(b'\r'),
                DotStep::End => {
                    consumed += n;
                    end = Some(consumed);
                    break 'pieces;
                }
                DotStep::NeedInput => {
                    assert_eq!(n, window.len(), "NeedInput before the input is used up");
                    consumed += n;
                    break;
                }
            }
            consumed += n;
        }
    }
    Decoded {
        message,
        end,
        too_big: r.too_big(),
        line_too_long: r.line_too_long(),
        size: r.size(),
    }
}

/// RFC 5321 4.5.2, written down directly: returns the unstuffed message, the end offset,
/// and the message size. Stops (without the held bytes) on an unfinished `.` / `.CR` line.
fn reference(input: &[u8]) -> (Vec<u8>, Option<usize>) {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let line_start = i == 0 || (i >= 2 && input[i - 2] == b'\r' && input[i - 1] == b'\n');
        if line_start && input[i] == b'.' {
            let after = &input[i + 1..];
            if after.starts_with(b"\r\n") {
                return (out, Some(i + 3));
            }
            if b"\r\n".starts_with(after) {
                // ".", ".\r" at the very end: not known yet.
                return (out, None);
            }
            i += 1;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&n_cuts, rest)) = data.split_first() else {
        return;
    };
    let n_cuts = usize::from(n_cuts % 8);
    if rest.len() < 2 * n_cuts + 2 {
        return;
    }
    let (cut_bytes, rest) = rest.split_at(2 * n_cuts);
    let (limits, input) = rest.split_at(2);
    let max_size = u64::from(limits[0]);
    let max_line = u64::from(limits[1]);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (input.len() + 1))
        .collect();
    cuts.sort_unstable();

    let whole = decode(input, &[], max_size, max_line);
    let split = decode(input, &cuts, max_size, max_line);
    let bytewise_cuts: Vec<usize> = (1..input.len()).collect();
    let bytewise = decode(input, &bytewise_cuts, max_size, max_line);
    for (other, how) in [(split, "split"), (bytewise, "byte by byte")] {
        if whole.too_big || whole.line_too_long {
            // After a limit the message is dropped (the session reports DataAborted), so
            // how much was handed out before the reader noticed depends on the reads.
            let flags = |d: &Decoded| (d.end, d.too_big, d.line_too_long, d.size);
            assert_eq!(flags(&whole), flags(&other), "{how} at {cuts:?}");
        } else {
            assert_eq!(whole, other, "{how} at {cuts:?}");
        }
    }

    let (want, want_end) = reference(input);
    assert_eq!(whole.end, want_end, "end position");
    // The size counts every message byte, also those not handed out after a limit.
    assert_eq!(whole.size, want.len() as u64, "size");
    assert_eq!(whole.too_big, max_size > 0 && whole.size > max_size);
    if whole.too_big || whole.line_too_long {
        assert!(
            want.starts_with(&whole.message),
            "aborted message is not a prefix"
        );
    } else {
        assert_eq!(whole.message, want, "message differs from RFC 5321 4.5.2");
    }
    // And without limits, the same again.
    if max_size != 0 || max_line != 0 {
        let unlimited = decode(input, &cuts, 0, 0);
        assert_eq!(unlimited.message, want);
        assert_eq!(unlimited.end, want_end);
    }
});
