//! The rewrite itself, on a header block in memory: which fields match, what their value
//! becomes, how the new field is written. No I/O.

use super::{OnEmpty, address, encoded_word, fold};
use crate::proto::header;
use regex::Regex;

/// A checked `rewrite` config, ready to apply.
#[derive(Debug)]
pub struct Rewriter {
    /// The field name as configured; matched case-insensitively.
    pub header: String,
    pub pattern: Regex,
    pub replace: String,
    pub on_empty: OnEmpty,
    /// Apply the pattern to each address of an address field on its own.
    pub each_address: bool,
}

/// What became of a header block.
#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    /// No field matched, or every match left its value as it was.
    Unchanged,
    /// The new block (without the empty line that ends it).
    Changed(Vec<u8>),
    /// A field rewrote to nothing and `on_empty = "discard-message"`.
    Discard,
}

/// What becomes of one field.
enum FieldEdit {
    Keep,
    Replace(String),
    Drop,
    Discard,
}

impl Rewriter {
    /// Each address of the list rewritten alone (trimmed, as DDMailer split at commas);
    /// those that come out empty are left out; the rest joined with ", ".
    fn replace_each_address(&self, value: &str) -> String {
        let mut kept: Vec<String> = Vec::new();
        for mailbox in address::mailboxes(value) {
            let one = mailbox.trim_matches([' ', '\t']);
            let new = self.pattern.replace_all(one, self.replace.as_str());
            let new = new.trim_matches([' ', '\t']);
            if !new.is_empty() {
                kept.push(new.to_string());
            }
        }
        kept.join(", ")
    }

    pub fn edit(&self, block: &[u8]) -> Edit {
        let block_end = header::block_line_end(block);
        let mut out = Vec::with_capacity(block.len() + 256);
        let mut changed = false;
        for part in header::parts(block) {
            match self.edit_field(&part, block_end) {
                FieldEdit::Keep => out.extend_from_slice(part.raw),
                FieldEdit::Replace(new) => {
                    out.extend_from_slice(new.as_bytes());
                    changed = true;
                }
                FieldEdit::Drop => changed = true,
                FieldEdit::Discard => return Edit::Discard,
            }
        }
        if changed {
            Edit::Changed(out)
        } else {
            Edit::Unchanged
        }
    }

    fn edit_field(&self, part: &header::Part<'_>, block_end: &'static str) -> FieldEdit {
        let Some(name) = part.name else {
            return FieldEdit::Keep;
        };
        if !name.eq_ignore_ascii_case(self.header.as_bytes()) {
            return FieldEdit::Keep;
        }
        // A field name is ASCII (header::is_field_name).
        let name = String::from_utf8_lossy(name);
        // 8-bit bytes that are not UTF-8 are no text to match: the field stays as it is.
        let Ok(unfolded) = String::from_utf8(header::unfold(part.value())) else {
            return FieldEdit::Keep;
        };
        let value = encoded_word::decode(unfolded.trim_matches([' ', '\t']));
        let matched = if self.each_address {
            address::mailboxes(&value)
                .iter()
                .any(|m| self.pattern.is_match(m.trim_matches([' ', '\t'])))
        } else {
            self.pattern.is_match(&value)
        };
        if !matched {
            return FieldEdit::Keep;
        }
        let replaced = if self.each_address {
            self.replace_each_address(&value)
        } else {
            self.pattern
                .replace_all(&value, self.replace.as_str())
                .into_owned()
        };
        // A line end from `replace` (or a bare CR in the value) would end the field early
        // and start one of its own: it becomes a space.
        let new = replaced.replace(['\r', '\n'], " ");
        let new = new.trim_matches([' ', '\t']);
        let line_end = part.line_end().unwrap_or(block_end);
        // The rule matched and left nothing (also when the value was empty already: a rule
        // like `^$` -> "" with drop-header removes empty fields).
        if new.is_empty() {
            return match self.on_empty {
                OnEmpty::DropHeader => FieldEdit::Drop,
                OnEmpty::Keep if value.is_empty() => FieldEdit::Keep,
                OnEmpty::Keep => FieldEdit::Replace(format!("{name}: {line_end}")),
                OnEmpty::DiscardMessage => FieldEdit::Discard,
            };
        }
        if replaced == value {
            return FieldEdit::Keep;
        }
        let tokens = if address::is_address_field(&name) {
            address::tokens(new)
        } else {
            fold::unstructured(new, name.len())
        };
        FieldEdit::Replace(fold::fold(&name, &tokens, line_end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(header: &str, pattern: &str, replace: &str, on_empty: OnEmpty) -> Rewriter {
        Rewriter {
            header: header.into(),
            pattern: Regex::new(pattern).unwrap(),
            replace: replace.into(),
            on_empty,
            each_address: false,
        }
    }

    fn changed(e: Edit) -> String {
        match e {
            Edit::Changed(b) => String::from_utf8(b).unwrap(),
            other => panic!("not changed: {other:?}"),
        }
    }

    #[test]
    fn rewrites_each_occurrence_and_keeps_the_rest() {
        let block = b"Received: x\r\nsubject: one\r\nX: y\r\nSUBJECT: two\r\n";
        let r = rw("Subject", "^", "[a] ", OnEmpty::DropHeader);
        assert_eq!(
            changed(r.edit(block)),
            "Received: x\r\nsubject: [a] one\r\nX: y\r\nSUBJECT: [a] two\r\n"
        );
    }

    #[test]
    fn a_value_that_was_empty_already_gets_on_empty_too() {
        let block = b"Subject: \r\nX: y\r\n";
        let drop = rw("Subject", "^$", "", OnEmpty::DropHeader);
        assert_eq!(changed(drop.edit(block)), "X: y\r\n");
        let discard = rw("Subject", ".*", "", OnEmpty::DiscardMessage);
        assert_eq!(discard.edit(block), Edit::Discard);
        // Nothing to write for `keep`: the field is as the rule would leave it.
        let keep = rw("Subject", ".*", "", OnEmpty::Keep);
        assert_eq!(keep.edit(block), Edit::Unchanged);
        // A pattern that does not match leaves even an empty field alone.
        let other = rw("Subject", "x", "", OnEmpty::DropHeader);
        assert_eq!(other.edit(block), Edit::Unchanged);
    }

    #[test]
    fn unchanged_values_are_not_a_change() {
        let block = b"Subject: =?utf-8?q?caf=C3=A9?=\r\n  folded\r\n";
        assert_eq!(
            rw("Subject", "nomatch", "x", OnEmpty::Keep).edit(block),
            Edit::Unchanged
        );
        assert_eq!(
            rw("Subject", "é", "é", OnEmpty::Keep).edit(block),
            Edit::Unchanged
        );
        assert_eq!(
            rw("To", ".*", "", OnEmpty::Keep).edit(block),
            Edit::Unchanged
        );
    }

    #[test]
    fn a_replacement_cannot_start_a_field() {
        let r = rw("Subject", "$", "\r\nBcc: x@example.org", OnEmpty::Keep);
        assert_eq!(
            changed(r.edit(b"Subject: hi\r\n")),
            "Subject: hi  Bcc: x@example.org\r\n"
        );
    }

    #[test]
    fn on_empty() {
        let block = b"A: 1\nSubject: [spam]\nB: 2\n";
        let r = |o| rw("subject", r"\[spam\]", "", o);
        assert_eq!(changed(r(OnEmpty::DropHeader).edit(block)), "A: 1\nB: 2\n");
        assert_eq!(
            changed(r(OnEmpty::Keep).edit(block)),
            "A: 1\nSubject: \nB: 2\n"
        );
        assert_eq!(r(OnEmpty::DiscardMessage).edit(block), Edit::Discard);
    }

    #[test]
    fn the_last_field_without_a_line_end_gets_the_block_s() {
        let r = rw("B", "2", "3", OnEmpty::Keep);
        assert_eq!(changed(r.edit(b"A: 1\nB: 2")), "A: 1\nB: 3\n");
    }

    // DESIGN.md "a non-ASCII result is encoded again" -- also in an address field
    // whose address has no angle brackets, a group, or a comment.
    #[test]
    fn non_ascii_beside_a_bare_address_is_encoded() {
        let r = rw("From", "^", "\u{dc}n\u{ef}code ", OnEmpty::Keep);
        for block in [
            &b"From: a@x.test\r\n"[..],
            b"From: Group: a@x.test, b@x.test;\r\n",
            b"From: (comment) a@x.test\r\n",
        ] {
            let out = changed(r.edit(block));
            assert!(out.is_ascii(), "raw 8-bit written: {out:?}");
        }
    }
}
