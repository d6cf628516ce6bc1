//! `highway health`: asks a running server's `/health/live` (default) or `/health/ready`
//! (`--ready`) and exits 0 on a 200, 1 otherwise, printing the answer. It is the image's
//! `HEALTHCHECK`, so the image needs no curl.

use highway_workflows::HumanDuration;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    /// Base URL of the server (e.g. `http://127.0.0.1:8080`). Default: the address of
    /// HIGHWAY_LISTEN, asked on loopback when it is unspecified (`0.0.0.0`, `[::]`).
    #[arg(long, env = "HIGHWAY_HEALTH_URL")]
    pub url: Option<String>,
    /// The server's listen address the default URL is made from.
    #[arg(long, env = "HIGHWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Ask `/health/ready` (Postgres, and Docker where required, up) instead of
    /// `/health/live` (the process answers).
    #[arg(long)]
    pub ready: bool,
    /// Give up (and fail) after this long.
    #[arg(long, default_value = "5s")]
    pub timeout: HumanDuration,
    /// The server's certificate (HIGHWAY_TLS_CERT, as the server reads it): when set,
    /// the default URL is `https://`.
    #[arg(long, env = "HIGHWAY_TLS_CERT", hide = true)]
    pub tls_cert: Option<std::path::PathBuf>,
}

/// The URL asked: `--url` (or HIGHWAY_HEALTH_URL) or the listen address, plus the path.
pub fn probe_url(args: &HealthArgs) -> String {
    let base = match &args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let mut addr = args.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            let scheme = if args.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{addr}")
        }
    };
    let path = if args.ready {
        "/health/ready"
    } else {
        "/health/live"
    };
    format!("{base}{path}")
}

/// Probes once; the exit code is the verdict.
pub async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let url = probe_url(&args);
    // The probe of the server's own loopback address under TLS does not check the
    // certificate: it is issued for the server's public name, not for 127.0.0.1, and
    // the probe sends no credentials and reads only a status. A given --url is verified.
    let own_loopback = args.url.is_none() && args.tls_cert.is_some();
    let http = reqwest::Client::builder()
        .timeout(args.timeout.into())
        .danger_accept_invalid_certs(own_loopback)
        .build()?;
    match http.get(&url).send().await {
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            println!("{} {}", status.as_u16(), body.trim());
            Ok(if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(e) => {
            eprintln!("error: {url}: {}", without_url(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// reqwest's message without its own copy of the URL (printed once already).
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>, listen: &str, ready: bool) -> HealthArgs {
        HealthArgs {
            url: url.map(str::to_string),
            listen: listen.parse().unwrap(),
            ready,
            timeout: HumanDuration::from_secs(1),
            tls_cert: None,
        }
    }

    #[test]
    fn the_url_comes_from_the_listen_address_on_loopback() {
        assert_eq!(
            probe_url(&args(None, "0.0.0.0:8080", true)),
            "http://127.0.0.1:8080/health/ready"
        );
        assert_eq!(
            probe_url(&args(None, "[::]:9000", false)),
            "http://[::1]:9000/health/live"
        );
        assert_eq!(
            probe_url(&args(None, "10.0.0.5:81", false)),
            "http://10.0.0.5:81/health/live"
        );
        assert_eq!(
            probe_url(&args(Some("https://w:8443/"), "0.0.0.0:8080", true)),
            "https://w:8443/health/ready"
        );
        let tls = HealthArgs {
            tls_cert: Some("/etc/highway/tls.pem".into()),
            ..args(None, "0.0.0.0:8443", true)
        };
        assert_eq!(probe_url(&tls), "https://127.0.0.1:8443/health/ready");
    }
}
