//! HTTPS for the API: the server certificate and key (PEM files), checked and loaded at
//! start, re-read on SIGHUP so certificates rotate without a restart, and the TLS
//! accept loop (rustls with ring, through axum-server).
//!
//! A reload only affects connections accepted after it; a new pair that does not load
//! (unreadable, not PEM, key not matching the certificate) is logged and the pair in
//! use stays.

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// The server's certificate chain and private key files (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate pair that cannot be used, naming the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {path} holds no PEM {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("the key {key} does not fit the certificate {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Reads and checks the pair into a rustls server configuration.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, Error> {
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| Error::Read {
            what,
            path: path.clone(),
            reason: e.to_string(),
        })
    };
    let cert_pem = read("--tls-cert", &files.cert)?;
    let key_pem = read("--tls-key", &files.key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Read {
            what: "--tls-cert",
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Empty {
            what: "--tls-cert",
            path: files.cert.clone(),
            expected: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => Error::Empty {
            what: "--tls-key",
            path: files.key.clone(),
            expected: "private key",
        },
        other => Error::Read {
            what: "--tls-key",
            path: files.key.clone(),
            reason: other.to_string(),
        },
    })?;
    let mismatch = |reason: String| Error::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| mismatch(e.to_string()))?;
    rustls::sign::CertifiedKey::new(certs.clone(), signing)
        .keys_match()
        .map_err(|e| mismatch(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| mismatch(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Re-reads the pair on every SIGHUP until `stop`; a pair that fails keeps the old one.
pub fn reload_on_sighup(
    config: RustlsConfig,
    files: TlsFiles,
    tracker: &TaskTracker,
    stop: CancellationToken,
) {
    tracker.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            warn!("cannot install the SIGHUP handler: TLS certificates reload only at restart");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = stop.cancelled() => return,
            }
            let f = files.clone();
            match tokio::task::spawn_blocking(move || server_config(&f)).await {
                Ok(Ok(new)) => {
                    config.reload_from_config(new);
                    info!(cert = %files.cert.display(), "TLS certificate reloaded (SIGHUP); new connections use it");
                }
                Ok(Err(e)) => {
                    error!(error = %e, "TLS certificate not reloaded; the current one stays in use");
                }
                Err(e) => error!(error = %e, "TLS certificate reload failed"),
            }
        }
    });
}

/// Serves the router over TLS until `shutdown` completes, then drains connections.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    config: RustlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener.into_std()?, config)?
        .handle(handle.clone())
        .serve(router.into_make_service());
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => return served,
        _ = shutdown => handle.graceful_shutdown(None),
    }
    server.await
}
