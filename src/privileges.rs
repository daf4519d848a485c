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
