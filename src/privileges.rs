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

/// Gives the regular file at `path` to `uid`:`gid`, through a descriptor opened without
/// following a symlink, and only when no other name links to it. Root does this to files
/// in `data_dir`, which the run user owns: a chown by name would hand that user whatever
/// it had put a symlink or a hard link there to (`mailchute.log -> /etc/shadow`).
pub fn chown_own_file(path: &std::path::Path, uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => format!("{} is a symlink: not followed", path.display()),
            _ => format!("{}: {e}", path.display()),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.nlink() != 1 {
        return Err(format!(
            "{} has {} names (hard links): not given away",
            path.display(),
            meta.nlink()
        ));
    }
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))
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

#[cfg(test)]
mod own_file_tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn chown_own_file_refuses_symlinks_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let (uid, gid) = (unsafe { libc::geteuid() }, unsafe { libc::getegid() });
        let log = dir.path().join("mailchute.log");
        std::fs::write(&log, "x\n").unwrap();
        assert_eq!(chown_own_file(&log, uid, gid), Ok(()));

        // What a run user could plant in the data_dir it owns.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret\n").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = chown_own_file(&link, uid, gid).unwrap_err();
        assert!(e.contains("is a symlink: not followed"), "{e}");
        let hard = dir.path().join("hard.log");
        std::fs::hard_link(&victim, &hard).unwrap();
        let e = chown_own_file(&hard, uid, gid).unwrap_err();
        assert!(e.contains("2 names (hard links)"), "{e}");
        let fifo = dir.path().join("fifo.log");
        let c = CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = chown_own_file(&fifo, uid, gid).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        assert_eq!(std::fs::metadata(&victim).unwrap().uid(), uid);
    }
}
