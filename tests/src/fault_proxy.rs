//! A fault-injecting proxy for the integration tests: listens on a unix socket or a
//! loopback TCP port, forwards to a target (the Docker socket, a Postgres port), and
//! misbehaves on demand — the machine's daemon and the shared test cluster are never
//! touched; only the path between them and the code under test is.
//!
//! Modes ([`Mode`], switchable at run time; a connection keeps the mode it was accepted
//! under, so a switch affects new connections — bollard dials a fresh connection per
//! request, F5): pass, refuse (accept and close at once), blackhole (accept, swallow the
//! request, never answer), delay every forwarded chunk, cut the response after N bytes,
//! drop the response (the request reaches the target, its reply never comes back), and
//! drop the response once for requests containing a pattern (R15: "create succeeded,
//! reply lost"). [`FaultProxy::sever`] closes every live connection (a restart).
//!
//! Every task lives in the proxy's `TaskTracker`; [`FaultProxy::shutdown`] waits for
//! them, and dropping the proxy cancels them.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How the proxy treats a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Accept, then close at once (the peer sees a reset / closed connection).
    Refuse,
    /// Accept and read, never connect to the target, never answer.
    Blackhole,
    /// Forward, sleeping this long before each chunk in either direction.
    Delay(Duration),
    /// Forward the request; forward this many bytes of the response, then close.
    CutAfter(usize),
    /// Forward the request; once the target answers, close without passing it on.
    DropResponse,
    /// Like `DropResponse` for the first connection whose request contains the pattern
    /// (e.g. `"POST /containers/create"`); then the mode returns to `Pass`. Other
    /// connections pass meanwhile.
    DropResponseOnce(String),
}

/// Where the proxy forwards to.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// Where the proxy listens.
#[derive(Debug, Clone)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Shared {
    target: Target,
    mode: Mutex<Mode>,
    /// Cancelled by `sever`; replaced by a fresh token for later connections.
    generation: Mutex<CancellationToken>,
    stop: CancellationToken,
    accepted: AtomicU64,
    forwarded_requests: AtomicU64,
    dropped_responses: AtomicU64,
}

impl Shared {
    fn mode(&self) -> Mode {
        self.mode.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A running proxy; cancels its tasks when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    tracker: TaskTracker,
    listen: Listen,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("listen", &self.listen)
            .field("target", &self.shared.target)
            .field("mode", &self.shared.mode())
            .finish()
    }
}

impl FaultProxy {
    /// Listens on the unix socket `path` (replacing a stale file).
    pub async fn unix(path: impl AsRef<Path>, target: Target) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let proxy = Self::new(Listen::Unix(path), target);
        let shared = proxy.shared.clone();
        let tracker = proxy.tracker.clone();
        proxy.tracker.spawn(async move {
            loop {
                tokio::select! {
                    r = listener.accept() => match r {
                        Ok((s, _)) => spawn_conn(&tracker, shared.clone(), Box::new(s)),
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    _ = shared.stop.cancelled() => return,
                }
            }
        });
        Ok(proxy)
    }

    /// Listens on a free loopback TCP port.
    pub async fn tcp(target: Target) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let proxy = Self::new(Listen::Tcp(addr), target);
        let shared = proxy.shared.clone();
        let tracker = proxy.tracker.clone();
        proxy.tracker.spawn(async move {
            loop {
                tokio::select! {
                    r = listener.accept() => match r {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            spawn_conn(&tracker, shared.clone(), Box::new(s))
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    _ = shared.stop.cancelled() => return,
                }
            }
        });
        Ok(proxy)
    }

    fn new(listen: Listen, target: Target) -> Self {
        Self {
            shared: Arc::new(Shared {
                target,
                mode: Mutex::new(Mode::Pass),
                generation: Mutex::new(CancellationToken::new()),
                stop: CancellationToken::new(),
                accepted: AtomicU64::new(0),
                forwarded_requests: AtomicU64::new(0),
                dropped_responses: AtomicU64::new(0),
            }),
            tracker: TaskTracker::new(),
            listen,
        }
    }

    /// A proxy in front of the machine's Docker socket, listening in `dir`.
    pub async fn docker(dir: &Path) -> io::Result<Self> {
        Self::unix(
            dir.join("docker-proxy.sock"),
            Target::Unix(PathBuf::from("/var/run/docker.sock")),
        )
        .await
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Closes every live connection (as a restart of the target would).
    pub fn sever(&self) {
        let mut g = self
            .shared
            .generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        g.cancel();
        *g = CancellationToken::new();
    }

    /// `unix:///…` or `tcp://127.0.0.1:…`, for a Docker host setting.
    pub fn url(&self) -> String {
        match &self.listen {
            Listen::Unix(p) => format!("unix://{}", p.display()),
            Listen::Tcp(a) => format!("tcp://{a}"),
        }
    }

    pub fn listen(&self) -> &Listen {
        &self.listen
    }

    /// The TCP port (panics for a unix proxy).
    pub fn port(&self) -> u16 {
        match &self.listen {
            Listen::Tcp(a) => a.port(),
            Listen::Unix(p) => panic!("unix proxy at {} has no port", p.display()),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections whose request went on to the target.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded_requests.load(Ordering::Relaxed)
    }

    /// Responses dropped by `DropResponse` / `DropResponseOnce`.
    pub fn dropped_responses(&self) -> u64 {
        self.shared.dropped_responses.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection and waits for all tasks.
    pub async fn shutdown(self) {
        self.shared.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        if let Listen::Unix(p) = &self.listen {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn spawn_conn(tracker: &TaskTracker, shared: Arc<Shared>, client: Box<dyn Io>) {
    shared.accepted.fetch_add(1, Ordering::Relaxed);
    let generation = shared
        .generation
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let stop = shared.stop.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = handle(shared, client) => {}
            _ = generation.cancelled() => {}
            _ = stop.cancelled() => {}
        }
    });
}

async fn connect(target: &Target) -> io::Result<Box<dyn Io>> {
    Ok(match target {
        Target::Unix(p) => Box::new(UnixStream::connect(p).await?),
        Target::Tcp(a) => {
            let s = TcpStream::connect(a).await?;
            let _ = s.set_nodelay(true);
            Box::new(s)
        }
    })
}

async fn handle(shared: Arc<Shared>, mut client: Box<dyn Io>) {
    let mode = shared.mode();
    match mode {
        Mode::Refuse => {
            let _ = client.shutdown().await;
        }
        Mode::Blackhole => {
            let mut buf = vec![0u8; 16 * 1024];
            // Swallow until the peer gives up (or the proxy is severed / stopped).
            while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {}
            std::future::pending::<()>().await;
        }
        Mode::DropResponseOnce(pattern) => {
            // Bollard sends one request per connection: its first bytes decide.
            let mut first = vec![0u8; 64 * 1024];
            let n = match client.read(&mut first).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            first.truncate(n);
            let matches = String::from_utf8_lossy(&first).contains(&pattern);
            let take = matches && {
                let mut m = shared.mode.lock().unwrap_or_else(|p| p.into_inner());
                if *m == Mode::DropResponseOnce(pattern.clone()) {
                    *m = Mode::Pass;
                    true
                } else {
                    false
                }
            };
            let mode = if take { Mode::DropResponse } else { Mode::Pass };
            forward(&shared, client, mode, first).await;
        }
        other => forward(&shared, client, other, Vec::new()).await,
    }
}

async fn forward(shared: &Shared, client: Box<dyn Io>, mode: Mode, already_read: Vec<u8>) {
    let Ok(upstream) = connect(&shared.target).await else {
        return; // target down: the client sees the connection close
    };
    shared.forwarded_requests.fetch_add(1, Ordering::Relaxed);
    let delay = match mode {
        Mode::Delay(d) => Some(d),
        _ => None,
    };
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let up = async move {
        if !already_read.is_empty() {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            uw.write_all(&already_read).await?;
        }
        copy(&mut cr, &mut uw, delay, None).await?;
        // Half-close: the target sees the end of the request, the answer still flows.
        uw.shutdown().await
    };
    let down = async move {
        match mode {
            Mode::DropResponse => {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = ur.read(&mut buf).await;
                shared.dropped_responses.fetch_add(1, Ordering::Relaxed);
                // Returning drops the client half: the caller sees the connection close.
                Ok(())
            }
            Mode::CutAfter(n) => {
                copy(&mut ur, &mut cw, None, Some(n)).await?;
                cw.shutdown().await
            }
            _ => {
                copy(&mut ur, &mut cw, delay, None).await?;
                cw.shutdown().await
            }
        }
    };
    // The response direction decides the end of the connection; the request direction
    // may finish first (half-close) without ending it.
    tokio::pin!(up);
    tokio::pin!(down);
    let mut up_done = false;
    loop {
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                if r.is_err() {
                    return;
                }
            }
            _ = &mut down => return,
        }
    }
}

async fn copy<R, W>(
    r: &mut R,
    w: &mut W,
    delay: Option<Duration>,
    mut limit: Option<usize>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if limit == Some(0) {
            return Ok(());
        }
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let n = match &mut limit {
            Some(left) => {
                let k = n.min(*left);
                *left -= k;
                k
            }
            None => n,
        };
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, h)
    }

    async fn roundtrip(port: u16, msg: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(msg).await?;
        let mut out = vec![0u8; msg.len()];
        let mut got = 0;
        tokio::time::timeout(timeout, async {
            while got < out.len() {
                let n = s.read(&mut out[got..]).await?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            io::Result::Ok(())
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))??;
        out.truncate(got);
        Ok(out)
    }

    #[tokio::test]
    async fn modes() {
        let (addr, server) = echo_server().await;
        let p = FaultProxy::tcp(Target::Tcp(addr)).await.unwrap();
        let t = Duration::from_secs(2);
        assert_eq!(roundtrip(p.port(), b"hello", t).await.unwrap(), b"hello");

        p.set_mode(Mode::Refuse);
        assert!(roundtrip(p.port(), b"hello", t).await.unwrap().is_empty());

        p.set_mode(Mode::Blackhole);
        let e = roundtrip(p.port(), b"hello", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);

        p.set_mode(Mode::CutAfter(3));
        assert_eq!(roundtrip(p.port(), b"hello", t).await.unwrap(), b"hel");

        p.set_mode(Mode::DropResponse);
        assert!(roundtrip(p.port(), b"hello", t).await.unwrap().is_empty());
        assert_eq!(p.dropped_responses(), 1);

        p.set_mode(Mode::DropResponseOnce("bye".into()));
        assert_eq!(roundtrip(p.port(), b"hello", t).await.unwrap(), b"hello");
        assert!(roundtrip(p.port(), b"bye", t).await.unwrap().is_empty());
        assert_eq!(p.mode(), Mode::Pass);
        assert_eq!(roundtrip(p.port(), b"bye", t).await.unwrap(), b"bye");

        p.set_mode(Mode::Delay(Duration::from_millis(200)));
        let t0 = std::time::Instant::now();
        assert_eq!(roundtrip(p.port(), b"slow", t).await.unwrap(), b"slow");
        assert!(t0.elapsed() >= Duration::from_millis(400));

        // Sever closes a live (blackholed) connection.
        p.set_mode(Mode::Blackhole);
        let mut s = TcpStream::connect(("127.0.0.1", p.port())).await.unwrap();
        s.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        p.sever();
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(t, s.read(&mut b)).await.unwrap();
        assert!(matches!(n, Ok(0) | Err(_)));
        assert!(p.accepted() >= 9);
        p.shutdown().await;
        server.abort();
    }
}
