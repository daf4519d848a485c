//! Binding sockets and accepting connections: limits, PROXY header, implicit TLS.

use super::Server;
use super::conn::{BoxIo, Conn, Peer};
use super::proxy_header::{self, Parsed};
use crate::config::{ListenerConfig, TlsMode};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

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

/// Binds the listener's socket. Must run inside the runtime (tokio sockets).
pub fn bind(cfg: &ListenerConfig, name: &str) -> Result<Bound, BindError> {
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
        set_socket_permissions(cfg, &path).map_err(err)?;
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

fn set_socket_permissions(cfg: &ListenerConfig, path: &std::path::Path) -> Result<(), String> {
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
        None => None,
    };
    let gid = match &cfg.socket_group {
        Some(g) => Some(crate::privileges::group_id(g)?),
        None => None,
    };
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid)
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Connection counts of one listener, kept across reloads.
#[derive(Default)]
pub struct Limits {
    total: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

pub struct Slot {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
}

impl Limits {
    fn acquire(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<Slot, &'static str> {
        let mut g = self.total.lock().map_err(|_| "internal error")?;
        let (total, per_ip) = &mut *g;
        if max_total > 0 && *total >= max_total {
            return Err("Too many connections");
        }
        if let Some(ip) = ip {
            let n = per_ip.entry(ip).or_insert(0);
            if max_per_ip > 0 && *n >= max_per_ip {
                return Err("Too many connections from your address");
            }
            *n += 1;
        }
        *total += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
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
                *n -= 1;
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
    let socket_ip = addr.map(|a| canonical(a.ip()));
    let _slot = match limits.acquire(
        socket_ip,
        settings.max_connections,
        settings.max_connections_per_ip,
    ) {
        Ok(s) => s,
        Err(why) => {
            let _ = io
                .write_all(
                    format!("421 4.7.0 {} {why}, try again later\r\n", state.hostname).as_bytes(),
                )
                .await;
            tracing::info!(listener = %name, client = ?addr, "refused: {why}");
            return;
        }
    };
    let mut peer = Peer {
        addr: addr.map(|a| a.to_string()),
        ip: socket_ip,
        proxied_by: None,
        uid,
        trusted: false,
    };
    if settings.proxy_protocol {
        let allowed = socket_ip.is_some_and(|ip| settings.trusted.contains(ip));
        if !allowed {
            tracing::warn!(listener = %name, client = ?addr, "PROXY header from an untrusted address: connection dropped");
            return;
        }
        match read_proxy_header(&mut io).await {
            Ok(Some(real)) => {
                peer.proxied_by = peer.addr.take();
                peer.addr = Some(real.to_string());
                peer.ip = Some(canonical(real.ip()));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(listener = %name, client = ?addr, error = %e, "bad PROXY header: connection dropped");
                return;
            }
        }
    }
    peer.trusted = match (peer.ip, uid) {
        (Some(ip), _) => settings.trusted.contains(ip),
        // Unix socket: only root and our own user may claim to be an MTA forwarding for
        // someone else; other local users could forge the facts.
        (None, Some(uid)) => uid == 0 || uid == unsafe { libc::geteuid() },
        (None, None) => false,
    };
    if let Some(ip) = peer.ip
        && !settings.allow_ips.is_empty()
        && !settings.allow_ips.contains(ip)
    {
        let _ = io.write_all(b"554 5.7.1 Access denied\r\n").await;
        tracing::info!(listener = %name, client = %ip, "refused: not in allow_ips");
        return;
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
                tracing::info!(listener = %name, client = ?peer.addr, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        }
    }
    let shutdown = server.shutdown_signal();
    Conn::new(io, peer, tls, settings, state, server)
        .run(shutdown)
        .await;
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
