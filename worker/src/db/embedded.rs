//! A private Postgres cluster for `highway up` and for tests, started from the installed
//! server binaries: data, socket and log under a state directory, a private loopback
//! port, a generated password. As root the binaries run as the `postgres` user (initdb
//! refuses root).

use super::Error;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Name of the database `highway up` uses inside the private cluster.
pub const DATABASE: &str = "highway";
/// File under the state dir holding the DATABASE_URL of the running private cluster
/// (mode 0600; other `highway` commands read it when DATABASE_URL is unset).
pub const URL_FILE: &str = "database-url";

/// A running private cluster.
#[derive(Debug)]
pub struct Cluster {
    pub data_dir: PathBuf,
    pub bindir: PathBuf,
    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/highway`.
    pub url: String,
    /// The same with the `postgres` maintenance database (to create databases).
    pub admin_url: String,
    pub port: u16,
    /// The generated password of the `postgres` role (also in `postgres/password`, 0600).
    pub password: String,
    /// False when the cluster was already running (another `highway up`): we leave it be.
    pub started_here: bool,
}

/// Finds the server binaries: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bindir() -> Result<PathBuf, Error> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if p.join("initdb").exists() {
                return Ok(p);
            }
        }
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").exists().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| {
        Error::Embedded(
            "PostgreSQL server binaries not found (install them: apt-get install -y postgresql), \
             or set DATABASE_URL"
                .into(),
        )
    })
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Runs a server binary, as `postgres` when we are root.
fn pg_command(bindir: &Path, prog: &str) -> Command {
    let bin = bindir.join(prog);
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn run(mut cmd: Command, what: &str) -> Result<String, Error> {
    let out = cmd
        .output()
        .map_err(|e| Error::Embedded(format!("{what}: cannot run: {e}")))?;
    if !out.status.success() {
        return Err(Error::Embedded(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn chown_postgres(path: &Path) -> Result<(), Error> {
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.arg("-R").arg("postgres:").arg(path);
                c
            },
            "chown",
        )?;
    }
    Ok(())
}

fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Embedded(format!("no free port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| Error::Embedded(e.to_string()))?
        .port())
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn write_private(path: &Path, content: &str) -> Result<(), Error> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::Embedded(format!("{}: {e}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::Embedded(format!("{}: {e}", path.display())))?;
    f.write_all(content.as_bytes())
        .map_err(|e| Error::Embedded(format!("{}: {e}", path.display())))
}

impl Cluster {
    /// Initialises (first time) and starts the cluster under `state_dir/postgres`, creates
    /// the `highway` database and writes `state_dir/database-url`. Reuses a cluster that
    /// is already running there.
    pub fn start(state_dir: &Path) -> Result<Self, Error> {
        let state_dir = absolute(state_dir)?;
        let root = state_dir.join("postgres");
        let data_dir = root.join("data");
        let sock_dir = root.join("run");
        let bindir = find_bindir()?;
        fs::create_dir_all(&sock_dir)
            .map_err(|e| Error::Embedded(format!("{}: {e}", root.display())))?;
        // The postgres user must be able to traverse to its directories.
        fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o755)).ok();
        let pw_file = root.join("password");
        let port_file = root.join("port");

        if !data_dir.join("PG_VERSION").exists() {
            let password = random_hex(16);
            write_private(&pw_file, &password)?;
            fs::create_dir_all(&data_dir).map_err(|e| Error::Embedded(e.to_string()))?;
            fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700)).ok();
            // initdb reads the password from a file the postgres user can read; it is
            // removed right after.
            let tmp_pw = root.join("initdb-pwfile");
            write_private(&tmp_pw, &password)?;
            chown_postgres(&root)?;
            let mut c = pg_command(&bindir, "initdb");
            c.arg("-D")
                .arg(&data_dir)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ])
                .arg(format!("--pwfile={}", tmp_pw.display()));
            let res = run(c, "initdb");
            fs::remove_file(&tmp_pw).ok();
            res?;
            // Settings for a queue workload on a small machine.
            let mut conf = fs::OpenOptions::new()
                .append(true)
                .open(data_dir.join("postgresql.conf"))
                .map_err(|e| Error::Embedded(e.to_string()))?;
            writeln!(
                conf,
                "\n# highway: private cluster\nlisten_addresses = '127.0.0.1'\nmax_connections = 300\nshared_buffers = 256MB\nsynchronous_commit = on\nfsync = on\nlog_min_messages = warning\n"
            )
            .map_err(|e| Error::Embedded(e.to_string()))?;
        }
        let password = fs::read_to_string(&pw_file)
            .map_err(|e| Error::Embedded(format!("{}: {e}", pw_file.display())))?
            .trim()
            .to_owned();

        let running = Self::is_running(&bindir, &data_dir);
        let port = match fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
        {
            Some(p) if running || port_free(p) => p,
            _ => {
                let p = free_port()?;
                write_private(&port_file, &p.to_string())?;
                p
            }
        };
        if !running {
            chown_postgres(&root)?;
            let mut c = pg_command(&bindir, "pg_ctl");
            c.arg("-D")
                .arg(&data_dir)
                .arg("-l")
                .arg(root.join("postgres.log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {port} -k {}", sock_dir.display()))
                .arg("start");
            run(c, "pg_ctl start")?;
        }
        let base = format!("postgres://postgres:{password}@127.0.0.1:{port}");
        let cluster = Self {
            data_dir,
            bindir,
            url: format!("{base}/{DATABASE}"),
            admin_url: format!("{base}/postgres"),
            port,
            password,
            started_here: !running,
        };
        cluster.create_database(DATABASE)?;
        write_private(&state_dir.join(URL_FILE), &cluster.url)?;
        Ok(cluster)
    }

    fn is_running(bindir: &Path, data_dir: &Path) -> bool {
        if !data_dir.join("postmaster.pid").exists() {
            return false;
        }
        let mut c = pg_command(bindir, "pg_ctl");
        c.arg("-D").arg(data_dir).arg("status");
        c.output().map(|o| o.status.success()).unwrap_or(false)
    }

    /// Creates a database if it does not exist (through psql-free SQL over the socket).
    pub fn create_database(&self, name: &str) -> Result<(), Error> {
        let admin = self.admin_url.clone();
        let name = name.to_owned();
        // Runs on its own thread with a small runtime: callers may be sync or async.
        std::thread::spawn(move || -> Result<(), Error> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Embedded(e.to_string()))?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .map_err(Error::Connect)?;
                let exists: Option<(i32,)> =
                    sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
                        .bind(&name)
                        .fetch_optional(&mut conn)
                        .await
                        .map_err(Error::Connect)?;
                if exists.is_none() {
                    sqlx::query(&format!("CREATE DATABASE \"{}\"", name.replace('"', "")))
                        .execute(&mut conn)
                        .await
                        .map_err(Error::Connect)?;
                }
                Ok(())
            })
        })
        .join()
        .map_err(|_| Error::Embedded("create database thread panicked".into()))?
    }

    /// Stops the cluster (fast shutdown) if this process started it.
    pub fn stop(&self) -> Result<(), Error> {
        if !self.started_here {
            return Ok(());
        }
        Self::stop_dir(&self.bindir, &self.data_dir)
    }

    /// Stops whatever cluster runs in `data_dir`.
    pub fn stop_dir(bindir: &Path, data_dir: &Path) -> Result<(), Error> {
        let mut c = pg_command(bindir, "pg_ctl");
        c.arg("-D").arg(data_dir).args(["-m", "fast", "-w", "stop"]);
        run(c, "pg_ctl stop").map(|_| ())
    }

    /// Stops the cluster under a state dir (`highway postgres stop`).
    pub fn stop_state_dir(state_dir: &Path) -> Result<(), Error> {
        let data_dir = absolute(state_dir)?.join("postgres").join("data");
        let bindir = find_bindir()?;
        if !Self::is_running(&bindir, &data_dir) {
            return Ok(());
        }
        Self::stop_dir(&bindir, &data_dir)
    }
}

/// Reads the URL a running `highway up` wrote into the state dir.
pub fn url_from_state_dir(state_dir: &Path) -> Option<String> {
    fs::read_to_string(state_dir.join(URL_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn absolute(p: &Path) -> Result<PathBuf, Error> {
    fs::create_dir_all(p).map_err(|e| Error::Embedded(format!("{}: {e}", p.display())))?;
    fs::canonicalize(p).map_err(|e| Error::Embedded(format!("{}: {e}", p.display())))
}
