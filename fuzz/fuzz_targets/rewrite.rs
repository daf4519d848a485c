//! The `rewrite` filter's header editing (`mailchute::filters::rewrite::edit`) on an
//! arbitrary header block, with rules that add non-ASCII text (encoded again), insert
//! group references, and empty a value.
//!
//! Invariants: no panic; a changed block holds no field the input did not have (a
//! replacement can never inject a header line), every field that was not rewritten comes
//! out byte for byte, and editing is deterministic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailchute::filters::rewrite::OnEmpty;
use mailchute::filters::rewrite::edit::{Edit, Rewriter};
use mailchute::proto::header;
use regex::Regex;
use std::sync::LazyLock;

static RULES: LazyLock<Vec<Rewriter>> = LazyLock::new(|| {
    let rule = |header: &str, pattern: &str, replace: &str, on_empty| Rewriter {
        header: header.into(),
        pattern: Regex::new(pattern).expect("fixed pattern"),
        replace: replace.into(),
        on_empty,
        each_address: header == "To",
    };
    vec![
        rule("Subject", "^", "[tagged] Grüße ", OnEmpty::DropHeader),
        rule("From", "^(.*)$", "Jörg \"$1\"\r\nX-Injected: 1", OnEmpty::Keep),
        rule("X-A", ".*", "", OnEmpty::DropHeader),
        rule("To", "@", " @ ", OnEmpty::DiscardMessage),
    ]
});

fn field_names(block: &[u8]) -> Vec<Vec<u8>> {
    header::parts(block)
        .iter()
        .filter_map(|p| p.name.map(|n| n.to_ascii_lowercase()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let before = field_names(data);
    for rule in RULES.iter() {
        let edit = rule.edit(data);
        assert_eq!(edit, rule.edit(data), "not deterministic");
        let Edit::Changed(out) = edit else {
            continue;
        };
        let after = field_names(&out);
        for name in &after {
            assert!(before.contains(name), "field {:?} appeared", String::from_utf8_lossy(name));
        }
        let target = rule.header.to_ascii_lowercase().into_bytes();
        let untouched = |block: &[u8]| -> Vec<Vec<u8>> {
            header::parts(block)
                .iter()
                .filter(|p| p.name.map(|n| n.to_ascii_lowercase()) != Some(target.clone()))
                .map(|p| p.raw.to_vec())
                .collect()
        };
        assert_eq!(untouched(data), untouched(&out), "a field not rewritten changed");
    }
});
