//! The DATA phase: dot-unstuffing and end-of-data detection (RFC 5321 4.5.2), with the
//! message size and line length counted on the way.
//!
//! Only `CR LF . CR LF` ends the data. A bare `LF . LF`, `LF . CR LF` or `CR LF . LF` is
//! message content (SMTP smuggling: a downstream server that ends data on those would see a
//! second message the client hid in this one). Bare LF and lone CR bytes are kept exactly.
//! A leading dot is removed only from lines that start after a CR LF (or at the start of
//! the data): `..x` becomes `.x` and, as RFC 5321 says, `.x` becomes `x`.

use std::ops::Range;

/// What one [`DotReader::step`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DotStep {
    /// Message bytes: this range of the input slice given to `step`.
    Data(Range<usize>),
    /// A single CR byte that was held back (after a line-leading dot we must see whether
    /// LF follows before we know the CR is content) and turned out to be content.
    Cr,
    /// `CRLF.CRLF` seen; the terminator is consumed and not part of the message.
    End,
    /// The input is used up.
    NeedInput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (start of data or after CR LF).
    LineStart,
    /// Inside a line, last byte not CR.
    Normal,
    /// Last content byte was CR.
    Cr,
    /// A line-leading dot was dropped.
    Dot,
    /// Line-leading dot then CR; the CR is held until we see whether LF follows.
    DotCr,
}

/// Counts message line lengths against a limit, for DATA and BDAT alike. A line ends at LF
/// (a bare LF too: a downstream server may treat it as a line end); its length excludes
/// the LF and one CR right before it.
#[derive(Debug, Clone)]
pub struct LineLimit {
    /// Bytes of the current line so far.
    len: u64,
    /// 0 = unlimited.
    max: u64,
}

impl LineLimit {
    pub fn new(max: u64) -> LineLimit {
        LineLimit { len: 0, max }
    }

    /// Counts one content byte; true if it makes the current line too long.
    pub fn byte(&mut self, b: u8) -> bool {
        if b == b'\n' {
            self.len = 0;
            return false;
        }
        self.len += 1;
        // A CR one past the limit may be the CR of the line's CR LF.
        self.max > 0
            && self.len > self.max
            && !(b == b'\r' && self.len == self.max.saturating_add(1))
    }

    /// Counts `bytes` as [`LineLimit::byte`] would one by one; true if any line in them
    /// is too long. Scans for LFs rather than looking at every byte.
    pub fn bytes(&mut self, bytes: &[u8]) -> bool {
        if self.max == 0 {
            return false;
        }
        let mut over = false;
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            over |= self.segment(&rest[..i]);
            self.len = 0;
            rest = &rest[i + 1..];
        }
        over | self.segment(rest)
    }

    /// Adds a piece of a line that holds no LF.
    fn segment(&mut self, seg: &[u8]) -> bool {
        let Some(&last) = seg.last() else {
            return false;
        };
        self.len = self.len.saturating_add(seg.len() as u64);
        let allowed_cr = self.max.saturating_add(1);
        self.len > allowed_cr || (self.len == allowed_cr && last != b'\r')
    }
}

/// Incremental DATA decoder. Feed it whatever arrived; it reports how much it consumed and
/// hands out message bytes as ranges of the input, so nothing is copied.
#[derive(Debug, Clone)]
pub struct DotReader {
    state: State,
    /// The current line's length, excluding the dropped dot and the line end.
    line: LineLimit,
    /// Unstuffed message bytes so far (including those not emitted after an overflow).
    size: u64,
    max_size: u64,
    too_big: bool,
    line_too_long: bool,
}

impl DotReader {
    /// `max_size` and `max_line` of 0 mean unlimited.
    pub fn new(max_size: u64, max_line: u64) -> DotReader {
        DotReader {
            state: State::LineStart,
            line: LineLimit::new(max_line),
            size: 0,
            max_size,
            too_big: false,
            line_too_long: false,
        }
    }

    /// The message exceeded `max_size`: no more data is emitted; keep stepping to the end.
    pub fn too_big(&self) -> bool {
        self.too_big
    }

    /// A line exceeded `max_line`: no more data is emitted; keep stepping to the end.
    pub fn line_too_long(&self) -> bool {
        self.line_too_long
    }

    /// Message size so far (unstuffed bytes).
    pub fn size(&self) -> u64 {
        self.size
    }

    fn aborted(&self) -> bool {
        self.too_big || self.line_too_long
    }

    /// Accounts one content byte for the size and line-length limits.
    fn count(&mut self, b: u8) {
        self.size += 1;
        if self.max_size > 0 && self.size > self.max_size {
            self.too_big = true;
        }
        if self.line.byte(b) {
            self.line_too_long = true;
        }
    }

    /// Decodes from the start of `input`. Returns how many bytes were consumed and what
    /// was found; a `Data` range lies within the consumed part.
    pub fn step(&mut self, input: &[u8]) -> (usize, DotStep) {
        let mut seg_start = 0;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::LineStart if b == b'.' => {
                    self.state = State::Dot;
                    // The dot is dropped: what came before it is one segment.
                    if i > seg_start && !self.aborted() {
                        return (i + 1, DotStep::Data(seg_start..i));
                    }
                    seg_start = i + 1;
                }
                State::Dot if b == b'\r' => {
                    self.state = State::DotCr;
                    seg_start = i + 1;
                }
                State::DotCr if b == b'\n' => {
                    return (i + 1, DotStep::End);
                }
                State::DotCr => {
                    // The held CR was content; emit it, then look at `b` again as the
                    // byte after a content CR.
                    self.state = State::Cr;
                    self.count(b'\r');
                    if self.aborted() {
                        continue;
                    }
                    return (i, DotStep::Cr);
                }
                _ => {
                    self.count(b);
                    self.state = match (self.state, b) {
                        (State::Cr, b'\n') => State::LineStart,
                        (_, b'\r') => State::Cr,
                        _ => State::Normal,
                    };
                }
            }
            i += 1;
        }
        if i > seg_start && !self.aborted() {
            return (i, DotStep::Data(seg_start..i));
        }
        (i, DotStep::NeedInput)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs the reader over `chunks` (as if each arrived in its own read) and returns the
    /// decoded message and whether the end was seen, plus the bytes left after the end.
    pub(crate) fn decode(
        chunks: &[&[u8]],
        max_size: u64,
        max_line: u64,
    ) -> (Vec<u8>, bool, Vec<u8>, DotReader) {
        let mut r = DotReader::new(max_size, max_line);
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut ended = false;
        for chunk in chunks {
            pending.extend_from_slice(chunk);
            if ended {
                continue;
            }
            loop {
                let (n, step) = r.step(&pending);
                assert!(n <= pending.len());
                let need_input = matches!(step, DotStep::NeedInput);
                match step {
                    DotStep::Data(range) => {
                        assert!(range.end <= n);
                        out.extend_from_slice(&pending[range]);
                    }
                    DotStep::Cr => out.push(b'\r'),
                    DotStep::End => {
                        pending.drain(..n);
                        ended = true;
                        break;
                    }
                    DotStep::NeedInput => {
                        assert_eq!(n, pending.len());
                    }
                }
                pending.drain(..n);
                if need_input {
                    break;
                }
            }
        }
        (out, ended, pending, r)
    }

    fn whole(input: &[u8]) -> (Vec<u8>, bool, Vec<u8>) {
        let (out, ended, rest, _) = decode(&[input], 0, 0);
        (out, ended, rest)
    }

    /// Decodes `input` in one piece, split at every position, and byte by byte; all must
    /// agree.
    fn check(input: &[u8], want: &[u8], want_end: bool, want_rest: &[u8]) {
        let (out, ended, rest) = whole(input);
        assert_eq!(
            (
                String::from_utf8_lossy(&out),
                ended,
                String::from_utf8_lossy(&rest)
            ),
            (
                String::from_utf8_lossy(want),
                want_end,
                String::from_utf8_lossy(want_rest)
            ),
            "input {:?}",
            String::from_utf8_lossy(input)
        );
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            let (o, e, r, _) = decode(&[a, b], 0, 0);
            assert_eq!(
                (&o[..], e, &r[..]),
                (want, want_end, want_rest),
                "split {split}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let (o, e, r, _) = decode(&bytes, 0, 0);
        assert_eq!((&o[..], e, &r[..]), (want, want_end, want_rest), "bytewise");
    }

    #[test]
    fn simple_message() {
        check(
            b"Subject: x\r\n\r\nbody\r\n.\r\n",
            b"Subject: x\r\n\r\nbody\r\n",
            true,
            b"",
        );
        check(b".\r\n", b"", true, b"");
        check(b".\r\nQUIT\r\n", b"", true, b"QUIT\r\n");
        check(
            b"a\r\n.\r\nMAIL FROM:<>\r\n",
            b"a\r\n",
            true,
            b"MAIL FROM:<>\r\n",
        );
    }

    #[test]
    fn dot_unstuffing() {
        check(b"..\r\n.\r\n", b".\r\n", true, b"");
        check(b"a\r\n..b\r\n...\r\n.\r\n", b"a\r\n.b\r\n..\r\n", true, b"");
        // RFC 5321 4.5.2: a leading dot is removed from any line that has more.
        check(b"a\r\n.b\r\n.\r\n", b"a\r\nb\r\n", true, b"");
        // A dot after a bare LF is not at a line start for SMTP: kept.
        check(b"a\n..b\r\n.\r\n", b"a\n..b\r\n", true, b"");
        // Dots inside lines are content.
        check(b"a.b..\r\n.\r\n", b"a.b..\r\n", true, b"");
    }

    #[test]
    fn smuggling_attempts_do_not_end_data() {
        // LF . LF
        check(
            b"a\n.\nMAIL FROM:<x>\n",
            b"a\n.\nMAIL FROM:<x>\n",
            false,
            b"",
        );
        // LF . CR LF
        check(b"a\n.\r\nb\r\n.\r\n", b"a\n.\r\nb\r\n", true, b"");
        // CR LF . LF: the dot is removed (line-leading), the LF kept.
        check(b"a\r\n.\nb\r\n.\r\n", b"a\r\n\nb\r\n", true, b"");
        // CR . CR LF
        check(b"a\r.\r\nb\r\n.\r\n", b"a\r.\r\nb\r\n", true, b"");
        // CR LF . CR x: the CR is content
        check(b"a\r\n.\rx\r\n.\r\n", b"a\r\n\rx\r\n", true, b"");
        check(b"a\r\n.\r\r\n.\r\n", b"a\r\n\r\r\n", true, b"");
    }

    #[test]
    fn bare_cr_lf_kept() {
        check(b"a\rb\nc\r\r\n.\r\n", b"a\rb\nc\r\r\n", true, b"");
        check(b"\n.\r\n", b"\n.\r\n", false, b"");
    }

    #[test]
    fn incomplete_has_no_end() {
        check(b"abc\r\n.", b"abc\r\n", false, b"");
        check(b"abc\r\n.\r", b"abc\r\n", false, b"");
    }

    #[test]
    fn size_limit() {
        let (out, ended, _, r) = decode(&[b"12345\r\n.\r\n"], 7, 0);
        assert!(ended && !r.too_big());
        assert_eq!(out, b"12345\r\n");
        let (_, ended, rest, r) = decode(&[b"123456\r\n", b"more\r\n.\r\nQUIT\r\n"], 7, 0);
        assert!(ended && r.too_big());
        assert_eq!(rest, b"QUIT\r\n");
        assert_eq!(r.size(), 14);
    }

    #[test]
    fn line_limit_counts_slices_as_bytes() {
        // Every split of these inputs, counted slice by slice, must agree with counting
        // byte by byte: a line may end (CR, LF) in the next slice.
        let inputs: [&[u8]; 8] = [
            b"1234\r\n12345\r\n",
            b"1234\r\r\n",
            b"1234\rx\n",
            b"12345\n",
            b"1234\n1234\r\n1234",
            b"\r\r\r\r\r\n",
            b"\n\n\n12\r\n",
            b"123\r\n1234\r",
        ];
        for input in inputs {
            let mut one = LineLimit::new(4);
            let want = input.iter().fold(false, |over, &b| one.byte(b) | over);
            for split in 0..=input.len() {
                let (a, b) = input.split_at(split);
                let mut l = LineLimit::new(4);
                let got = l.bytes(a) | l.bytes(b);
                assert_eq!(
                    got,
                    want,
                    "{:?} split at {split}",
                    String::from_utf8_lossy(input)
                );
            }
        }
        assert!(!LineLimit::new(0).bytes(&[b'x'; 10_000]));
        let mut l = LineLimit::new(4);
        assert!(!l.bytes(b"1234\r"));
        assert!(!l.bytes(b"\n"), "the CR LF of a full line, split");
        assert!(l.bytes(b"12345"));
    }

    #[test]
    fn line_limit() {
        let (_, ended, _, r) = decode(&[b"1234\r\n.\r\n"], 0, 4);
        assert!(ended && !r.line_too_long());
        let (_, ended, _, r) = decode(&[b"12345\r\n.\r\n"], 0, 4);
        assert!(ended && r.line_too_long());
        let (_, _, _, r) = decode(&[b"1234\r\r\n.\r\n"], 0, 4);
        assert!(r.line_too_long());
        // The stuffing dot does not count.
        let (_, _, _, r) = decode(&[b"..234\r\n.\r\n"], 0, 4);
        assert!(!r.line_too_long());
        // Bare LF ends a line for counting purposes.
        let (_, _, _, r) = decode(&[b"1234\n1234\r\n.\r\n"], 0, 4);
        assert!(!r.line_too_long());
    }
}
