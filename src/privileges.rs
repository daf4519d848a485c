//! Users, groups and dropping root after binding.

use std::ffi::CString;

/// (uid, primary gid) of a user name or numeric uid.
pub fn user_id(name: &str) -> Result<(u32, u32), String> {
    let c = CString::new(name).map_err(|_| format!("user {name:?}: contains NUL"))?;
    // SAFETY: getpwnam returns a pointer into static storage or NULL; we copy the two
    // integers out immediately and call it only from the start-up thread.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        if let Ok(uid) = name.parse::<u32>() {
            return Ok((uid, uid));
        }
        return Err(format!("user {name:?} does not exist"));
    }
    unsafe { Ok(((*pw).pw_uid, (*pw).pw_gid)) }
}

pub fn group_id(name: &str) -> Result<u32, String> {
    let c = CString::new(name).map_err(|_| format!("group {name:?}: contains NUL"))?;
    // SAFETY: as for getpwnam.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return name
            .parse::<u32>()
            .map_err(|_| format!("group {name:?} does not exist"));
    }
    unsafe { Ok((*gr).gr_gid) }
}

/// Switches to `user` (and `group`, else the user's primary group) for good.
pub fn drop_to(user: &str, group: Option<&str>) -> Result<(), String> {
    let (uid, primary) = user_id(user)?;
    let gid = match group {
        Some(g) => group_id(g)?,
        None => primary,
    };
    // SAFETY: plain syscalls; order matters (groups and gid while still root, uid last).
    unsafe {
        if libc::setgroups(1, &gid) != 0 {
            return Err(format!(
                "setgroups({gid}): {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::setgid(gid) != 0 {
            return Err(format!(
                "setgid({gid}): {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::setuid(uid) != 0 {
            return Err(format!(
                "setuid({uid}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Gives `dir` and everything below it to `uid`:`gid`, so that the daemon can still write its
/// spool after dropping root. Symlinks are not followed.
pub fn chown_tree(dir: &std::path::Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if meta.is_dir() {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}
