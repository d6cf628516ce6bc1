//! A TCP fault proxy on loopback for the tests, placed between a worker and Postgres (or
//! any TCP service): `pass` forwards, `refuse` closes every connection (and refuses new
//! ones), `blackhole` keeps connections open but forwards nothing in either direction.
//!
//! Leaving `blackhole` closes the connections that were blackholed: bytes were dropped,
//! so their protocol state is lost (a real partition ends the same way, with the peers'
//! retransmission timeouts; we skip the wait). Every task lives in the proxy's `JoinSet`
//! and is aborted when the proxy is dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Refuse,
    Blackhole,
}

#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    _tasks: Arc<Mutex<JoinSet<()>>>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(Mode::Pass);
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let upstream = upstream.to_string();
        // Weak: the accept task must not keep its own JoinSet alive (dropping the proxy
        // aborts every task).
        let t2 = Arc::downgrade(&tasks);
        tasks.lock().unwrap().spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let rx = rx.clone();
                let up = upstream.clone();
                let Some(set) = t2.upgrade() else { return };
                set.lock().unwrap().spawn(connection(sock, up, rx));
            }
        });
        Self {
            addr,
            mode: tx,
            _tasks: tasks,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `url` (a Postgres URL) with its host:port replaced by the proxy's.
    pub fn rewrite_url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("url has a scheme");
        let (auth_host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let auth = auth_host
            .rsplit_once('@')
            .map(|(a, _)| format!("{a}@"))
            .unwrap_or_default();
        format!("{scheme}://{auth}{}/{path}", self.addr)
    }
}

/// The `host:port` of a Postgres URL.
pub fn url_host_port(url: &str) -> String {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let host = rest.split('/').next().unwrap_or(rest);
    let host = host.rsplit_once('@').map(|x| x.1).unwrap_or(host);
    let host = host.split('?').next().unwrap_or(host);
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    }
}

async fn connection(mut client: TcpStream, upstream: String, mut rx: watch::Receiver<Mode>) {
    let mode = *rx.borrow_and_update();
    match mode {
        Mode::Refuse => return,
        Mode::Blackhole => {
            swallow(&mut client, None, &mut rx).await;
            return;
        }
        Mode::Pass => {}
    }
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut b1 = vec![0u8; 16 * 1024];
    let mut b2 = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = cr.read(&mut b1) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if sw.write_all(&b1[..n]).await.is_err() { return },
            },
            n = sr.read(&mut b2) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if cw.write_all(&b2[..n]).await.is_err() { return },
            },
            r = rx.changed() => {
                if r.is_err() { return; }
                match *rx.borrow_and_update() {
                    Mode::Pass => {}
                    Mode::Refuse => return,
                    Mode::Blackhole => break,
                }
            }
        }
    }
    swallow(&mut client, Some(&mut server), &mut rx).await;
}

/// Reads and drops everything until the mode leaves `Blackhole`, then closes.
async fn swallow(
    client: &mut TcpStream,
    mut server: Option<&mut TcpStream>,
    rx: &mut watch::Receiver<Mode>,
) {
    let mut b1 = vec![0u8; 16 * 1024];
    let mut b2 = vec![0u8; 16 * 1024];
    let mut client_open = true;
    let mut server_open = server.is_some();
    loop {
        tokio::select! {
            n = client.read(&mut b1), if client_open => if matches!(n, Ok(0) | Err(_)) { client_open = false },
            n = async { match server.as_deref_mut() { Some(s) => s.read(&mut b2).await, None => std::future::pending().await } }, if server_open => {
                if matches!(n, Ok(0) | Err(_)) { server_open = false }
            },
            r = rx.changed() => {
                if r.is_err() || *rx.borrow_and_update() != Mode::Blackhole {
                    return;
                }
            }
        }
    }
}
