//! A message's header block as fields (RFC 5322 §2.2), and unfolding. No I/O; works on
//! bytes, because a header may hold 8-bit bytes that are no text at all.

/// One part of the header block, with its bytes exactly as they came (line ends included),
/// so that writing every part back gives the block unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    pub raw: &'a [u8],
    /// The field name (without whitespace before the colon); `None` for lines that are no
    /// field (an mbox `From ` line, garbage), which are only ever copied.
    pub name: Option<&'a [u8]>,
}

impl<'a> Part<'a> {
    /// The field's value: everything after the colon, continuation lines and the final line
    /// end included.
    pub fn value(&self) -> &'a [u8] {
        match self.raw.iter().position(|&b| b == b':') {
            Some(colon) if self.name.is_some() => &self.raw[colon + 1..],
            _ => &[],
        }
    }

    /// The line end of the part's first line; `None` when the block ends without one.
    pub fn line_end(&self) -> Option<&'static str> {
        let first = self.raw.split_inclusive(|&b| b == b'\n').next()?;
        line_end_of(first)
    }
}

fn line_end_of(line: &[u8]) -> Option<&'static str> {
    if line.ends_with(b"\r\n") {
        Some("\r\n")
    } else if line.ends_with(b"\n") {
        Some("\n")
    } else {
        None
    }
}

/// Whether `line` is the empty line that ends the header block.
pub fn is_blank_line(line: &[u8]) -> bool {
    line == b"\n" || line == b"\r\n"
}

/// The line end the block uses (its first line's), CRLF when it has none.
pub fn block_line_end(block: &[u8]) -> &'static str {
    block
        .split_inclusive(|&b| b == b'\n')
        .next()
        .and_then(line_end_of)
        .unwrap_or("\r\n")
}

/// Splits a header block (without the empty line that ends it) into parts. A line that
/// starts with whitespace continues the part before it.
pub fn parts(block: &[u8]) -> Vec<Part<'_>> {
    let mut parts: Vec<Part<'_>> = Vec::new();
    // Where the last part starts in `block`.
    let mut part_start = 0;
    let mut line_start = 0;
    for line in block.split_inclusive(|&b| b == b'\n') {
        let line_end = line_start + line.len();
        let continues = matches!(line.first(), Some(b' ' | b'\t'));
        match parts.last_mut() {
            Some(last) if continues => last.raw = &block[part_start..line_end],
            _ => {
                part_start = line_start;
                parts.push(Part {
                    raw: line,
                    name: field_name(line),
                });
            }
        }
        line_start = line_end;
    }
    parts
}

/// The name of the field this line starts, if it starts one: ftext, then optional
/// whitespace (RFC 5322 §4.5.3's obsolete form), then a colon.
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    is_field_name(name).then_some(name)
}

/// RFC 5322 §3.6.8: one or more printable US-ASCII characters other than colon.
pub fn is_field_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b) && b != b':')
}

/// RFC 5322 §2.2.3 unfolding: a line end followed by whitespace is removed (the
/// whitespace stays); the value's own final line end goes too.
pub fn unfold(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let end_len = if value[i..].starts_with(b"\r\n") {
            2
        } else if value[i] == b'\n' {
            1
        } else {
            0
        };
        if end_len > 0 {
            // A line end before whitespace is folding; the last one ends the field. One in
            // the middle not followed by whitespace cannot happen in a part.
            i += end_len;
            continue;
        }
        out.push(value[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fields_with_continuations() {
        let block = b"Received: from a\r\n\tby b\r\nSubject: hi\r\nX-Y : z\r\n";
        let p = parts(block);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].raw, b"Received: from a\r\n\tby b\r\n");
        assert_eq!(p[0].name, Some(&b"Received"[..]));
        assert_eq!(p[1].value(), b" hi\r\n");
        assert_eq!(p[2].name, Some(&b"X-Y"[..]));
        assert_eq!(
            p.iter().flat_map(|p| p.raw.to_vec()).collect::<Vec<_>>(),
            block
        );
    }

    #[test]
    fn lines_that_are_no_field_are_kept() {
        let block = b"From someone Mon Jan  1 00:00:00 2024\n continued\nno colon here\nA: b";
        let p = parts(block);
        assert_eq!(p.len(), 3);
        // "From someone Mon Jan  1 00" is no field name (spaces).
        assert_eq!(p[0].name, None);
        assert_eq!(
            p[0].raw,
            b"From someone Mon Jan  1 00:00:00 2024\n continued\n"
        );
        assert_eq!(p[1].name, None);
        assert_eq!(p[2].name, Some(&b"A"[..]));
        assert_eq!(p[2].line_end(), None);
        assert_eq!(p[1].line_end(), Some("\n"));
    }

    #[test]
    fn a_leading_continuation_is_a_part_of_its_own() {
        let p = parts(b" odd\r\nA: b\r\n");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, None);
    }

    #[test]
    fn unfolds() {
        assert_eq!(unfold(b" a\r\n b\r\n\tc\r\n"), b" a b\tc");
        assert_eq!(unfold(b" a\n  b\n"), b" a  b");
        assert_eq!(unfold(b" a"), b" a");
    }

    #[test]
    fn field_names() {
        assert!(is_field_name(b"X-Archived-At"));
        assert!(!is_field_name(b""));
        assert!(!is_field_name(b"Sub ject"));
        assert!(!is_field_name(b"Subject:"));
        assert!(!is_field_name("Sübject".as_bytes()));
        assert_eq!(block_line_end(b"A: b\nC: d\r\n"), "\n");
        assert_eq!(block_line_end(b"A: b"), "\r\n");
    }
}
