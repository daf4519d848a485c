//! Binding sockets and accepting connections: limits, PROXY header, implicit TLS.

use super::Server;
use super::conn::{BoxIo, Conn, Peer};
use super::settings::ListenerSettings;
use crate::config::{ListenerConfig, TlsMode};
use crate::proto::proxy_header::{self, Parsed};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

pub enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

#[derive(Debug, thiserror::Error)]
#[error("listener {name}: {message}")]
pub struct BindError {
    pub name: String,
    pub message: String,
}

/// Binds the listener's socket. Must run inside the runtime (tokio sockets). A unix socket
/// goes to `run_as` (uid, gid: the `[server] user` it will run as), unless the listener
/// names its own `socket_owner` / `socket_group`.
pub fn bind(
    cfg: &ListenerConfig,
    name: &str,
    run_as: Option<(u32, u32)>,
) -> Result<Bound, BindError> {
    let err = |message: String| BindError {
        name: name.to_string(),
        message,
    };
    if let Some(path) = cfg.address.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                // A stale socket from an earlier run; a live daemon would hold the pid file.
                let _ = std::fs::remove_file(&path);
            } else {
                return Err(err(format!(
                    "{} exists and is not a socket",
                    path.display()
                )));
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        }
        let l = UnixListener::bind(&path)
            .map_err(|e| err(format!("cannot bind {}: {e}", path.display())))?;
        set_socket_permissions(cfg, &path, run_as).map_err(err)?;
        return Ok(Bound::Unix(l, path));
    }
    let addr: SocketAddr = cfg.address.parse().map_err(|_| {
        err(format!(
            "address {:?}: expected host:port or unix:/path",
            cfg.address
        ))
    })?;
    let std_l =
        std::net::TcpListener::bind(addr).map_err(|e| err(format!("cannot bind {addr}: {e}")))?;
    std_l
        .set_nonblocking(true)
        .map_err(|e| err(e.to_string()))?;
    let l = TcpListener::from_std(std_l).map_err(|e| err(e.to_string()))?;
    Ok(Bound::Tcp(l))
}

fn set_socket_permissions(
    cfg: &ListenerConfig,
    path: &std::path::Path,
    run_as: Option<(u32, u32)>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    // Any local user may submit by default, as with sendmail on every Unix host.
    let mode = match &cfg.socket_mode {
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .map_err(|_| format!("socket_mode {m:?}: expected an octal mode like \"0770\""))?,
        None => 0o666,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    let uid = match &cfg.socket_owner {
        Some(u) => Some(crate::privileges::user_id(u)?.0),
        None => run_as.map(|(uid, _)| uid),
    };
    let gid = match &cfg.socket_group {
        Some(g) => Some(crate::privileges::group_id(g)?),
        None => run_as.map(|(_, gid)| gid),
    };
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid)
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Connection counts of one listener, kept across reloads.
pub struct Limits {
    /// Connections in all, and per client address.
    total: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// Permits for refused connections waiting for their client to close (see `refuse`).
    lingering: Semaphore,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            total: Mutex::default(),
            lingering: Semaphore::new(MAX_LINGERING),
        }
    }
}

/// One connection's share of [`Limits`], given back when it drops. Taken in two steps: the
/// total at accept, the per-IP share once the client's address is known (on a PROXY
/// listener the socket's address is the load balancer's, the client's comes in the header).
pub struct Slot {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
}

impl Limits {
    /// Takes one of the listener's `max_total` (0 = unlimited) connection slots.
    fn acquire(self: &Arc<Self>, max_total: usize) -> Result<Slot, &'static str> {
        let mut g = self.total.lock().map_err(|_| "internal error")?;
        let (total, _) = &mut *g;
        if max_total > 0 && *total >= max_total {
            return Err("Too many connections");
        }
        *total += 1;
        Ok(Slot {
            limits: self.clone(),
            ip: None,
        })
    }
}

impl Slot {
    /// Counts this connection against `ip`'s `max_per_ip` (0 = unlimited). Once per slot:
    /// a second call is refused rather than counting one connection twice.
    fn charge_ip(&mut self, ip: IpAddr, max_per_ip: usize) -> Result<(), &'static str> {
        if self.ip.is_some() {
            return Err("internal error");
        }
        let mut g = self.limits.total.lock().map_err(|_| "internal error")?;
        let (_, per_ip) = &mut *g;
        let n = per_ip.entry(ip).or_insert(0);
        if max_per_ip > 0 && *n >= max_per_ip {
            return Err("Too many connections from your address");
        }
        *n += 1;
        self.ip = Some(ip);
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut g) = self.limits.total.lock() {
            let (total, per_ip) = &mut *g;
            *total = total.saturating_sub(1);
            if let Some(ip) = self.ip
                && let Some(n) = per_ip.get_mut(&ip)
            {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// Runs the accept loop until shutdown.
pub async fn serve(server: Arc<Server>, name: String, bound: Bound) {
    let limits = Arc::new(Limits::default());
    let mut shutdown = server.shutdown_signal();
    loop {
        let accepted: std::io::Result<(BoxIo, Option<SocketAddr>, Option<u32>)> = tokio::select! {
            _ = shutdown.changed() => break,
            r = accept(&bound) => r,
        };
        match accepted {
            Ok((io, addr, uid)) => {
                let server = server.clone();
                let name = name.clone();
                let limits = limits.clone();
                tokio::spawn(async move { handle(server, name, io, addr, uid, limits).await });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if let Bound::Unix(_, path) = &bound {
        let _ = std::fs::remove_file(path);
    }
}

async fn accept(bound: &Bound) -> std::io::Result<(BoxIo, Option<SocketAddr>, Option<u32>)> {
    match bound {
        Bound::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Box::new(s), Some(addr), None))
        }
        Bound::Unix(l, _) => {
            let (s, _) = l.accept().await?;
            let uid = s.peer_cred().ok().map(|c| c.uid());
            Ok((Box::new(s), None, uid))
        }
    }
}

async fn handle(
    server: Arc<Server>,
    name: String,
    mut io: BoxIo,
    addr: Option<SocketAddr>,
    uid: Option<u32>,
    limits: Arc<Limits>,
) {
    let _active = server.conn_started();
    let state = server.state();
    let Some(settings) = state.listeners.get(&name).cloned() else {
        return;
    };
    let mut slot = match limits.acquire(settings.max_connections) {
        Ok(s) => s,
        Err(why) => return refuse_busy(io, &limits, &state.hostname, &name, addr, why).await,
    };
    let Some(mut peer) = identify(&mut io, &settings, addr, uid).await else {
        return;
    };
    // Keyed on the effective client: behind a load balancer every connection comes from
    // the balancer's address, and one busy client must not lock out all the others.
    // A refused connection gives its slot back before it lingers (see `refuse`).
    if let Some(ip) = peer.ip
        && let Err(why) = slot.charge_ip(ip, settings.max_connections_per_ip)
    {
        drop(slot);
        let client = peer.addr.as_deref();
        return refuse_busy(io, &limits, &state.hostname, &name, client, why).await;
    }
    peer.trusted = is_trusted(&settings, &peer);
    if let Some(ip) = peer.ip
        && !settings.may_connect(ip)
    {
        drop(slot);
        tracing::info!(listener = %name, client = %ip, "refused: not in allow_ips");
        return refuse(io, &limits, b"554 5.7.1 Access denied\r\n").await;
    }
    let mut tls = None;
    if settings.tls == TlsMode::Implicit {
        let Some(acceptor) = settings.acceptor.clone() else {
            return;
        };
        match tokio::time::timeout(settings.command_timeout, acceptor.accept(io)).await {
            Ok(Ok(s)) => {
                tls = Some(super::tls::describe(s.get_ref().1));
                io = Box::new(s);
            }
            Ok(Err(e)) => {
                tracing::info!(listener = %name, client = peer.addr.as_deref(), error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        }
    }
    let shutdown = server.shutdown_signal();
    Conn::new(io, peer, tls, settings, state, server)
        .run(shutdown)
        .await;
    // Held for the whole session, given back only now.
    drop(slot);
}

/// Who the client is: the socket's peer, or on a PROXY listener the address its header
/// gives. `None` when the connection must be dropped without a word (a PROXY header from
/// an untrusted address, or a bad one: whatever we said would go to an unknown party).
async fn identify(
    io: &mut BoxIo,
    settings: &ListenerSettings,
    addr: Option<SocketAddr>,
    uid: Option<u32>,
) -> Option<Peer> {
    let socket_ip = addr.map(|a| canonical(a.ip()));
    let mut peer = Peer {
        addr: addr.map(|a| a.to_string()),
        ip: socket_ip,
        proxied_by: None,
        uid,
        trusted: false,
    };
    if !settings.proxy_protocol {
        return Some(peer);
    }
    let name = &settings.name;
    if !socket_ip.is_some_and(|ip| settings.trusted.contains(ip)) {
        tracing::warn!(listener = %name, client = addr.map(|a| a.to_string()), "PROXY header from an untrusted address: connection dropped");
        return None;
    }
    match read_proxy_header(io).await {
        Ok(Some(real)) => {
            peer.proxied_by = peer.addr.take();
            peer.addr = Some(real.to_string());
            peer.ip = Some(canonical(real.ip()));
        }
        // LOCAL / UNKNOWN: the balancer's own connection (a health check).
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(listener = %name, client = addr.map(|a| a.to_string()), error = %e, "bad PROXY header: connection dropped");
            return None;
        }
    }
    Some(peer)
}

/// Whether the client may send XFORWARD.
fn is_trusted(settings: &ListenerSettings, peer: &Peer) -> bool {
    match (peer.ip, peer.uid) {
        (Some(ip), _) => settings.trusted.contains(ip),
        // Unix socket: only root and our own user may claim to be an MTA forwarding for
        // someone else; other local users could forge the facts.
        (None, Some(uid)) => uid == 0 || uid == unsafe { libc::geteuid() },
        (None, None) => false,
    }
}

/// Answers a connection over a limit with 421 and closes it.
async fn refuse_busy(
    io: BoxIo,
    limits: &Limits,
    hostname: &str,
    name: &str,
    client: Option<impl std::fmt::Display>,
    why: &str,
) {
    let client = client.map(|c| c.to_string());
    tracing::info!(listener = %name, client, "refused: {why}");
    let reply = format!("421 4.7.0 {hostname} {why}, try again later\r\n");
    refuse(io, limits, reply.as_bytes()).await;
}

/// How long a refused client gets to read our reply and close before we do.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// Most bytes we read (and drop) from a refused client while it lingers.
const REFUSAL_DRAIN_MAX: usize = 64 * 1024;
/// Refused connections that may linger at once; refusals hold no connection slot, so
/// without this bound a flood of them would hold sockets for `REFUSAL_LINGER` each.
const MAX_LINGERING: usize = 64;

/// Writes `reply`, ends our side, and reads what the client still sends until it closes
/// (bounded in time and bytes). Closing a socket with unread input makes the kernel send
/// RST instead of FIN, and an RST can destroy the reply in the client's receive buffer
/// before it read it: a PROXY header not yet read, or commands a client sent early.
async fn refuse(mut io: BoxIo, limits: &Limits, reply: &[u8]) {
    let Ok(_lingering) = limits.lingering.try_acquire() else {
        // Too many already: say it anyway, without waiting for anyone.
        let _ = io.write_all(reply).await;
        return;
    };
    let said = async {
        io.write_all(reply).await?;
        io.flush().await?;
        io.shutdown().await
    };
    if !matches!(tokio::time::timeout(REFUSAL_LINGER, said).await, Ok(Ok(()))) {
        return;
    }
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < REFUSAL_DRAIN_MAX {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
}

/// Reads the PROXY header byte by byte, so not one byte of what follows (a TLS ClientHello,
/// or nothing — the client waits for our greeting) is consumed.
async fn read_proxy_header(io: &mut BoxIo) -> std::io::Result<Option<SocketAddr>> {
    let mut buf = Vec::with_capacity(64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout_at(deadline, io.read(&mut b))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out reading the PROXY header",
                )
            })??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the PROXY header ended",
            ));
        }
        buf.push(b[0]);
        match proxy_header::parse(&buf) {
            Parsed::Incomplete => continue,
            Parsed::Done { source, .. } => return Ok(source),
            Parsed::Invalid(e) => {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
            }
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4 (allow lists are written with IPv4 CIDRs).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn total_at_accept_per_ip_when_the_client_is_known() {
        let limits = Arc::new(Limits::default());
        // The balancer's connections: the total counts them before any address is known.
        let mut a = limits.acquire(3).unwrap();
        let mut b = limits.acquire(3).unwrap();
        a.charge_ip(ip("192.0.2.7"), 1).unwrap();
        b.charge_ip(ip("192.0.2.8"), 1).unwrap();
        let mut c = limits.acquire(3).unwrap();
        assert_eq!(
            c.charge_ip(ip("192.0.2.7"), 1),
            Err("Too many connections from your address")
        );
        assert!(limits.acquire(3).is_err(), "c still holds its total slot");
        drop(c);
        let d = limits.acquire(3).unwrap();
        assert_eq!(limits.acquire(3).err(), Some("Too many connections"));
        drop((a, d));
        let mut e = limits.acquire(3).unwrap();
        e.charge_ip(ip("192.0.2.7"), 1).unwrap();
        let g = limits.total.lock().unwrap();
        assert_eq!(g.0, 2);
        assert_eq!(g.1.len(), 2, "{:?}", g.1);
    }

    #[test]
    fn unlimited_and_released() {
        let limits = Arc::new(Limits::default());
        let slots: Vec<Slot> = (0..5)
            .map(|_| {
                let mut s = limits.acquire(0).unwrap();
                s.charge_ip(ip("192.0.2.7"), 0).unwrap();
                s
            })
            .collect();
        assert_eq!(limits.total.lock().unwrap().1[&ip("192.0.2.7")], 5);
        drop(slots);
        let g = limits.total.lock().unwrap();
        assert_eq!(g.0, 0);
        assert!(g.1.is_empty());
    }
}
