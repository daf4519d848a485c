//! `rewrite`: a regex substitution on one header field, DDMailer's header filters.
//!
//! ```toml
//! [filter.archived]
//! type = "rewrite"
//! header = "Subject"
//! pattern = "^"
//! replace = "[archived] "
//! on_empty = "drop-header"   # or "keep", "discard-message"
//! ```
//!
//! What it does, and the choices made where the issue left them open:
//! - Only the header block (up to the first empty line; a message without one is all
//!   header) is read into memory, at most [`HEADER_LIMIT`] of it. A larger header block is
//!   passed unchanged with a warning: a filter that only decorates a message should not
//!   hold it back, and failing it (4xx) would fail every retry the same way.
//! - The body is copied byte for byte, streamed; line ends are never touched, and the
//!   fields written anew use the line end of the field they replace.
//! - `header` matches field names case-insensitively, every occurrence is rewritten.
//!   The pattern sees the value unfolded, RFC 2047-decoded, without the whitespace around
//!   it, and `replace` (the regex crate's syntax: `$1`, `${name}`, `$$`) replaces **every**
//!   match, as `re.sub` and `s///g` do: anchor the pattern (`^`, `$`) to replace once.
//! - A field whose value comes out the same is written back byte for byte. A changed value
//!   is folded at 78 columns; non-ASCII in it is encoded (UTF-8 encoded words, Q for text
//!   that is mostly ASCII, B for the rest): in address fields only the display names,
//!   elsewhere the runs of non-ASCII words. A run that fits one encoded word is moved to
//!   the next line rather than split (Python's `email` reads a space into a display name
//!   split across encoded words). A line end in
//!   the result becomes a space (no field can be smuggled in).
//! - A value that comes out empty (or only whitespace): `on_empty`, by default
//!   `drop-header`, which removes the field, as DDMailer users expect; `keep` writes
//!   `Name: ` with nothing after it; `discard-message` discards the message for the route.
//! - A field whose bytes are not UTF-8 (raw 8-bit) is not matched and stays as it is.
//! - `if_sender` limits the rule to messages from some envelope senders; `each_address`
//!   applies it to each address of an address field in turn (DDMailer's From/To filters).

// The sans-I/O parts are public so a fuzz target can drive each alone.
pub mod address;
pub mod edit;
pub mod encoded_word;
pub mod fold;
#[cfg(test)]
mod tests;

use super::{Filter, FilterContext, FilterError, FilterInput, Verdict};
use crate::config::{InvalidKey, MatchRule, Seg};
use crate::delivery::BoxFuture;
use crate::proto::header;
use edit::{Edit, Rewriter};
use regex::Regex;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// The most of a message's header block held in memory.
pub const HEADER_LIMIT: usize = 4 << 20;

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// The field to rewrite, e.g. `Subject`; any case.
    pub header: String,
    /// A regular expression (the regex crate's syntax) over the decoded value.
    pub pattern: String,
    /// What each match becomes; `$1`, `${name}` name groups of `pattern`.
    pub replace: String,
    #[serde(default)]
    pub on_empty: OnEmpty,
    /// Apply the rule only to messages whose envelope sender matches one of these (route
    /// `match` syntax: `root@host.example`, `@host.example`, `/^cron@/`, `*`); empty: all.
    #[serde(default)]
    pub if_sender: Vec<String>,
    /// In an address field (From, To, Cc, …), apply the pattern to each address of the list
    /// on its own, as DDMailer did (`^root@localhost$` then matches in `a@x, root@localhost`);
    /// addresses that rewrite to nothing are left out of the list.
    #[serde(default)]
    pub each_address: bool,
}

/// What to do with a field whose value rewrote to nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnEmpty {
    /// Remove the field (DDMailer's behaviour).
    #[default]
    DropHeader,
    /// Write the field with an empty value.
    Keep,
    /// Accept the message and deliver it nowhere for this route.
    DiscardMessage,
}

impl OnEmpty {
    fn describe(self) -> &'static str {
        match self {
            OnEmpty::DropHeader => "drop header",
            OnEmpty::Keep => "keep empty header",
            OnEmpty::DiscardMessage => "discard message",
        }
    }
}

/// One line for `config check`.
pub fn summary(c: &RewriteConfig) -> String {
    let mut s = format!(
        "rewrite {}{}: /{}/ -> {:?} (on empty: {})",
        c.header,
        if c.each_address {
            " (each address)"
        } else {
            ""
        },
        c.pattern,
        c.replace,
        c.on_empty.describe()
    );
    if !c.if_sender.is_empty() {
        s.push_str(&format!(", if the sender is {}", c.if_sender.join(" or ")));
    }
    s
}

pub struct RewriteFilter {
    /// Shared with the blocking task that does the file work.
    rewriter: Arc<Rewriter>,
    /// Empty: every message.
    if_sender: Vec<MatchRule>,
}

impl RewriteFilter {
    pub fn new(c: &RewriteConfig, _ctx: &FilterContext) -> Result<RewriteFilter, InvalidKey> {
        if !header::is_field_name(c.header.as_bytes()) {
            return Err(InvalidKey::at(
                "header",
                format!(
                    "{:?} is not a header field name: expected printable ASCII without \
                     spaces or a colon, e.g. \"Subject\"",
                    c.header
                ),
            ));
        }
        let pattern = Regex::new(&c.pattern).map_err(|e| {
            InvalidKey::at("pattern", format!("not a valid regular expression: {e}"))
        })?;
        check_groups(&c.replace, &pattern).map_err(|m| InvalidKey::at("replace", m))?;
        if c.each_address && !address::is_address_field(&c.header) {
            return Err(InvalidKey::at(
                "each_address",
                format!(
                    "{:?} is not an address field: each_address works on From, To, Cc, Bcc, \
                     Reply-To, Sender and their Resent- forms",
                    c.header
                ),
            ));
        }
        let mut if_sender = Vec::new();
        for (i, entry) in c.if_sender.iter().enumerate() {
            if_sender.push(MatchRule::parse(entry.trim()).map_err(|m| InvalidKey {
                key: vec![Seg::Key("if_sender".into()), Seg::Index(i)],
                message: m,
            })?);
        }
        Ok(RewriteFilter {
            rewriter: Arc::new(Rewriter {
                header: c.header.clone(),
                pattern,
                replace: c.replace.clone(),
                on_empty: c.on_empty,
                each_address: c.each_address,
            }),
            if_sender,
        })
    }
}

/// Every group `replace` refers to exists in `pattern`: the regex crate would silently
/// put nothing there (and reads `$1a` as a group named `1a`).
fn check_groups(replace: &str, pattern: &Regex) -> Result<(), String> {
    for name in group_refs(replace) {
        let exists = match name.parse::<usize>() {
            Ok(i) => i < pattern.captures_len(),
            Err(_) => pattern.capture_names().flatten().any(|n| n == name),
        };
        if !exists {
            let mut hint = format!(
                "\"{name}\" is no group of the pattern (it has {} numbered group(s)",
                pattern.captures_len() - 1
            );
            let named: Vec<&str> = pattern.capture_names().flatten().collect();
            if !named.is_empty() {
                hint.push_str(&format!(" and the named: {}", named.join(", ")));
            }
            hint.push(')');
            if name.starts_with(|c: char| c.is_ascii_digit()) && name.parse::<usize>().is_err() {
                let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
                let rest = &name[digits.len()..];
                hint.push_str(&format!(
                    "; for group {digits} followed by \"{rest}\" write ${{{digits}}}{rest}"
                ));
            }
            hint.push_str("; a literal $ is written $$");
            return Err(hint);
        }
    }
    Ok(())
}

/// The group names in a replacement, read as the regex crate reads them (`Regex::replace`
/// docs): `$$` is a literal `$`, `${name}` and `$name` (the longest run of letters, digits
/// and `_`) refer to a group, any other `$` is literal.
fn group_refs(replace: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = replace;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            rest = after;
        } else if let Some(braced) = rest.strip_prefix('{') {
            if let Some(close) = braced.find('}') {
                out.push(&braced[..close]);
                rest = &braced[close + 1..];
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end > 0 {
                out.push(&rest[..end]);
            }
            rest = &rest[end..];
        }
    }
    out
}

impl Filter for RewriteFilter {
    fn apply<'a>(
        &'a self,
        input: &'a FilterInput<'a>,
    ) -> BoxFuture<'a, Result<Verdict, FilterError>> {
        let sender = &input.envelope.mail_from;
        if !self.if_sender.is_empty() && !self.if_sender.iter().any(|r| r.matches(sender)) {
            return Box::pin(async { Ok(Verdict::Pass) });
        }
        let rewriter = Arc::clone(&self.rewriter);
        let body = input.body.to_path_buf();
        let output = input.output.to_path_buf();
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || run(&rewriter, &body, &output)).await {
                Ok(verdict) => verdict,
                Err(e) => Err(FilterError::new(
                    "4.3.0",
                    format!("rewrite: internal error: {e}"),
                )),
            }
        })
    }
}

/// The file work, on a blocking thread.
fn run(rewriter: &Rewriter, body: &Path, output: &Path) -> Result<Verdict, FilterError> {
    let reading = |e: io::Error| FilterError::from_io(format!("reading {}", body.display()), &e);
    let mut reader = BufReader::with_capacity(64 * 1024, File::open(body).map_err(reading)?);
    let Some(head) = read_head(&mut reader, HEADER_LIMIT).map_err(reading)? else {
        tracing::warn!(
            body = %body.display(),
            limit = HEADER_LIMIT,
            "rewrite: the header block is larger than the limit; message passed unchanged"
        );
        return Ok(Verdict::Pass);
    };
    match rewriter.edit(&head.block) {
        Edit::Unchanged => Ok(Verdict::Pass),
        Edit::Discard => Ok(Verdict::Discard {
            reason: format!(
                "rewrite: {} rewrote to nothing (on_empty = \"discard-message\")",
                rewriter.header
            ),
        }),
        Edit::Changed(block) => {
            write_message(&block, &head.separator, &mut reader, output)
                .map_err(|e| FilterError::from_io(format!("writing {}", output.display()), &e))?;
            Ok(Verdict::Changed)
        }
    }
}

/// The header block as read, and the empty line after it (none when the message is all
/// header).
struct Head {
    block: Vec<u8>,
    separator: Vec<u8>,
}

/// Reads the header block; `None` when it is longer than `limit`.
fn read_head(reader: &mut impl BufRead, limit: usize) -> io::Result<Option<Head>> {
    let mut block = Vec::new();
    loop {
        let start = block.len();
        // Room for the limit and the empty line after it, plus a byte to see it is passed.
        let budget = (limit + 3).saturating_sub(start) as u64;
        let n = reader.by_ref().take(budget).read_until(b'\n', &mut block)?;
        if header::is_blank_line(&block[start..]) {
            let separator = block.split_off(start);
            return Ok(Some(Head { block, separator }));
        }
        if block.len() > limit {
            return Ok(None);
        }
        if n == 0 || !block.ends_with(b"\n") {
            return Ok(Some(Head {
                block,
                separator: Vec::new(),
            }));
        }
    }
}

/// The new header block, the empty line, and the rest of `body` streamed after it.
fn write_message(
    block: &[u8],
    separator: &[u8],
    body: &mut impl Read,
    output: &Path,
) -> io::Result<()> {
    // Mail, like the spool file it came from: readable by us alone.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(output)?;
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    out.write_all(block)?;
    out.write_all(separator)?;
    io::copy(body, &mut out)?;
    // Durability is the stage's (it owns the file once we answer).
    out.flush()
}
