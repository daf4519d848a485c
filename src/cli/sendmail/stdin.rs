//! Standard input for `-bs`, read with a deadline: `poll(2)` then `read(2)` on fd 0
//! directly (not through std's buffered `Stdin`, whose buffer `poll` cannot see), so that a
//! client that falls silent ends the session instead of holding it forever. Works for a
//! pipe, a terminal and a regular file alike (a file always polls readable).

use std::time::Duration;

/// What one read got.
pub enum Read {
    Bytes(usize),
    Eof,
    /// Nothing arrived within the timeout.
    Silent,
}

/// Reads what standard input has, waiting at most `timeout` for something to arrive. fd 0
/// is read directly (not through std's buffered `Stdin`), so that `poll` sees every byte
/// that is not yet handed to the session.
pub fn read_stdin(buf: &mut [u8], timeout: Duration) -> std::io::Result<Read> {
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        let mut fd = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let rc = unsafe { libc::poll(&mut fd, 1, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if rc == 0 {
            return Ok(Read::Silent);
        }
        break;
    }
    loop {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(if n == 0 {
            Read::Eof
        } else {
            Read::Bytes(n as usize)
        });
    }
}
