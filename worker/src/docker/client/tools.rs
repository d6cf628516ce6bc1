//! The bollard calls of the `tools.docker.*` handlers other than `run` (exec, logs,
//! commit, image listing and removal): a child of `client` so that every request still
//! goes through [`DockerClient::call`] / [`DockerClient::stream_next`] with a deadline,
//! and the Architecture Invariant ("only `client` issues requests") holds.
//!
//! Owns: request shapes and deadlines of those calls. Must not: check ownership (the
//! callers pass ids read from the tracking tables, never user input: trap 29).

use super::{DockerClient, Error, Removed, Result};
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerConfig, ExecInspectResponse, ImageSummary};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, ListImagesOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use tokio::io::AsyncWrite;
use tokio::time::Instant;

/// The output half of a started exec (or of a logs request).
pub type OutputStream =
    Pin<Box<dyn Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>>;

/// A started, attached exec: read `output`, write `input` (closed when dropped).
pub struct StartedExec {
    pub exec_id: String,
    pub output: OutputStream,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

/// What an exec is asked to run.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub stdin: bool,
}

/// Filters of the daemon's log endpoint (unix seconds; `tail` as a count).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogsQuery {
    pub tail: Option<u64>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl DockerClient {
    /// Creates and starts an attached exec (`Tty=false`: framed output, trap 11).
    pub async fn exec_start(&self, container_id: &str, spec: ExecSpec) -> Result<StartedExec> {
        let t = self.inner.settings.call_timeout;
        let id = container_id.to_string();
        let opts = CreateExecOptions::<String> {
            attach_stdin: Some(spec.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: Some(spec.env),
            cmd: Some(spec.cmd),
            user: spec.user,
            working_dir: spec.working_dir,
            ..Default::default()
        };
        let created = self
            .call("create_exec", t, |d| async move {
                d.create_exec(&id, opts).await
            })
            .await?;
        let exec_id = created.id;
        let eid = exec_id.clone();
        let started = self
            .call("start_exec", t, |d| async move {
                d.start_exec(
                    &eid,
                    Some(StartExecOptions {
                        detach: false,
                        tty: false,
                        output_capacity: None,
                    }),
                )
                .await
            })
            .await?;
        match started {
            StartExecResults::Attached { output, input } => Ok(StartedExec {
                exec_id,
                output,
                input,
            }),
            StartExecResults::Detached => Err(Error::Stream {
                op: "start_exec",
                message: "the daemon started the exec detached".into(),
            }),
        }
    }

    pub async fn exec_inspect(&self, exec_id: &str) -> Result<ExecInspectResponse> {
        let t = self.inner.settings.call_timeout;
        let id = exec_id.to_string();
        self.call(
            "inspect_exec",
            t,
            |d| async move { d.inspect_exec(&id).await },
        )
        .await
    }

    /// The daemon's copy of the logs (stdout and stderr both, trap 10), not followed.
    /// Read it with [`DockerClient::stream_next`] (op `logs`) and a deadline: streams
    /// have no timeout of their own (F2).
    pub fn logs(&self, container_id: &str, q: LogsQuery) -> Result<OutputStream> {
        let op = "logs";
        let obs = self.admit(op)?;
        let docker = self.connect_observed(op, &obs)?;
        let tail = q
            .tail
            .map(|n| n.to_string())
            .unwrap_or_else(|| "all".into());
        let mut b = LogsOptionsBuilder::default()
            .follow(false)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail(&tail);
        if let Some(s) = q.since {
            b = b.since(i32::try_from(s).unwrap_or(i32::MAX));
        }
        if let Some(u) = q.until {
            b = b.until(i32::try_from(u).unwrap_or(i32::MAX));
        }
        Ok(docker.logs(container_id, Some(b.build())).boxed())
    }

    /// `docker commit`: `config` overrides keys of the container's config (F6: it can
    /// override, never remove). Returns the new image id.
    pub async fn commit(
        &self,
        container_id: &str,
        repo: &str,
        tag: &str,
        comment: &str,
        config: ContainerConfig,
    ) -> Result<String> {
        // A commit writes a layer: allow it the transfer deadline, not the short one.
        let t = self.inner.settings.transfer_timeout;
        let opts = CommitContainerOptionsBuilder::default()
            .container(container_id)
            .repo(repo)
            .tag(tag)
            .comment(comment)
            .author("highway")
            .pause(true)
            .build();
        let r = self
            .call("commit_container", t, |d| async move {
                d.commit_container(opts, config).await
            })
            .await?;
        Some(r.id).filter(|s| !s.is_empty()).ok_or(Error::Api {
            op: "commit_container",
            status: 0,
            message: "the daemon returned no image id".into(),
        })
    }

    /// Images matching the daemon-side filters (`reference`, `label`, `dangling`).
    pub async fn list_images(
        &self,
        filters: &HashMap<String, Vec<String>>,
    ) -> Result<Vec<ImageSummary>> {
        let t = self.inner.settings.call_timeout;
        let opts = ListImagesOptionsBuilder::default()
            .all(false)
            .filters(filters)
            .build();
        self.call("list_images", t, |d| async move {
            d.list_images(Some(opts)).await
        })
        .await
    }

    /// Removes an image by id (`force` untags it from every repository). 404 is success
    /// (already gone); 409 (in use by a container) is returned to the caller.
    pub async fn remove_image(&self, image_id: &str, force: bool) -> Result<bool> {
        // Deleting layers is disk work: on a busy daemon it took over 5 s (the plain call
        // deadline), and a timed-out call counts against the circuit breaker.
        let t = self.inner.settings.call_timeout * 6;
        let id = image_id.to_string();
        let opts = RemoveImageOptionsBuilder::default()
            .force(force)
            .noprune(false)
            .build();
        match self
            .call("remove_image", t, |d| async move {
                d.remove_image(&id, Some(opts), None).await
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads a stream to its end or `deadline`, item by item within the idle timeout.
    /// `Err(Timeout)` when either passes; the caller keeps what `f` already saw.
    pub async fn drain_output(
        &self,
        op: &'static str,
        stream: &mut OutputStream,
        deadline: Instant,
        mut f: impl FnMut(LogOutput),
    ) -> Result<()> {
        let idle = self.inner.settings.stream_idle_timeout;
        while let Some(item) = self.stream_next(op, stream, idle, deadline).await? {
            f(item);
        }
        Ok(())
    }

    /// One remove call with the caller's `force` / `v`. 404 = already gone; a 409
    /// (running without `force`, or a removal in progress) is returned to the caller.
    /// With `force`, confirms with inspect like [`DockerClient::remove_container`].
    pub async fn remove_container_with(&self, id: &str, force: bool, v: bool) -> Result<Removed> {
        if force && v {
            return self.remove_container(id).await;
        }
        let t = self.inner.settings.call_timeout;
        let idc = id.to_string();
        let opts = RemoveContainerOptionsBuilder::default()
            .force(force)
            .v(v)
            .build();
        match self
            .call("remove_container", t, |d| async move {
                d.remove_container(&idc, Some(opts)).await
            })
            .await
        {
            Ok(()) => Ok(Removed::Removed),
            Err(e) if e.is_not_found() => Ok(Removed::AlreadyGone),
            Err(e) => Err(e),
        }
    }
}
