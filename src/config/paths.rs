//! Relative paths made absolute against the config file's directory (DESIGN: under
//! Postfix's `pipe` the cwd is arbitrary). The loader uses these for its own keys; sinks and
//! filters use them for theirs.

use std::path::{Component, Path, PathBuf};

/// `base/p` for a relative `p`, `p` itself when absolute; `.` components dropped.
pub fn join(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    base.join(p)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// [`join`] for a path kept as text (it may hold `{placeholders}`); empty stays empty, so
/// that a check can still refuse it.
pub fn join_str(base: &Path, p: &str) -> String {
    if p.is_empty() || Path::new(p).is_absolute() {
        return p.to_string();
    }
    join(base, Path::new(p)).to_string_lossy().into_owned()
}

/// `unix:PATH` with PATH joined; a `host:port` address is left as it is.
pub fn join_unix_address(base: &Path, address: &mut String) {
    if let Some(p) = address.strip_prefix("unix:")
        && !p.is_empty()
    {
        *address = format!("unix:{}", join_str(base, p));
    }
}
