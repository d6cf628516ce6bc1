//! Run spec → Engine API: builds the bollard 0.21 `ContainerCreateBody` for a validated,
//! policy-checked `tools.docker.run`, with the secure defaults that are always applied
//! (`CapDrop=ALL`, `no-new-privileges`, init, pids/memory/CPU limits, a capped log, no
//! TTY, no stdin, no Docker `AutoRemove`, restart `no`) and the `highway.*` labels the
//! garbage collector relies on. Also the deterministic container name.
//!
//! Pure: no I/O. Callers run `DockerRunParams::validate` and `policy::check` first; this
//! module assumes both passed and does not re-judge the policy. The body it returns holds
//! resolved secret values in `Env`: never log it.

use crate::config::docker::DockerConfig;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, HealthConfig, HostConfig,
    HostConfigLogConfig, Mount, MountType, PortBinding, ResourcesUlimits, RestartPolicy,
    RestartPolicyNameEnum,
};
use highway_workflows::docker::{
    ByteSize, DockerRunParams, RestartPolicyName, VolumeKind, RESERVED_LABEL_PREFIX,
};
use highway_workflows::HumanDuration;
use std::collections::HashMap;
use uuid::Uuid;

/// Label keys stamped on every managed container. The garbage collector, adoption on a
/// 409 and the tracking table all key on these.
pub mod labels {
    pub const MANAGED: &str = "highway.managed";
    pub const ACTIVITY_ID: &str = "highway.activity_id";
    pub const WORKFLOW_RUN_ID: &str = "highway.workflow_run_id";
    pub const TENANT_ID: &str = "highway.tenant_id";
    pub const WORKER_ID: &str = "highway.worker_id";
    pub const ATTEMPT: &str = "highway.attempt";
    pub const DEPLOYMENT: &str = "highway.deployment";
    /// `true` for detached runs: the container belongs to the workflow run.
    pub const DETACHED: &str = "highway.detached";
    /// Seconds after the container's `Created` time (daemon clock) after which the GC may
    /// remove it: `detach_ttl` for detached runs, `retention` for kept ones.
    pub const TTL_SECONDS: &str = "highway.ttl_seconds";
}

/// Who a container belongs to; becomes its labels and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIdentity {
    pub activity_id: Uuid,
    pub attempt: i32,
    pub tenant_id: String,
    pub workflow_run_id: Option<Uuid>,
    pub worker_id: Uuid,
    pub deployment: String,
}

/// The container name for an attempt: `highway-<activity uuid, simple>-<attempt>`.
/// Deterministic so that a retried create hits 409 instead of making a second container.
pub fn container_name(activity_id: Uuid, attempt: i32) -> String {
    format!("highway-{}-{attempt}", activity_id.simple())
}

/// Parses a memory size (`"512m"`, `"1g"`, `"1048576"`) to bytes.
pub fn parse_memory(s: &str) -> Result<i64, highway_workflows::docker::ParseUnitError> {
    s.parse::<ByteSize>().map(ByteSize::as_i64)
}

/// Parses a CPU count (`"1.5"`, `"500m"`) to Docker's `NanoCpus`.
pub fn parse_cpus(s: &str) -> Result<i64, highway_workflows::docker::ParseUnitError> {
    s.parse::<highway_workflows::docker::Cpus>()
        .map(|c| c.nano_cpus())
}

fn nanos(d: HumanDuration) -> i64 {
    i64::try_from(d.0.as_nanos()).unwrap_or(i64::MAX)
}

/// The create body for one attempt, and warnings about what was adjusted (log sizes
/// clamped, ineffective settings). Missing-limit warnings come from `policy::check`.
///
/// `resolved_env` is the full environment with secret references already resolved,
/// in the order to pass to Docker; `params.environment` is not read here.
pub fn container_config(
    params: &DockerRunParams,
    cfg: &DockerConfig,
    ident: &RunIdentity,
    resolved_env: &[(String, String)],
) -> (ContainerCreateBody, Vec<String>) {
    let mut warnings = Vec::new();
    let policy = &cfg.policy;
    let image = params
        .image_ref()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| params.image.clone());

    let memory = params
        .memory_limit
        .unwrap_or(policy.default_memory)
        .as_i64();
    let host_config = HostConfig {
        memory: Some(memory),
        // Swap equal to memory: no swap beyond the limit, so OOM is reached predictably.
        memory_swap: Some(memory),
        nano_cpus: Some(params.cpu_limit.unwrap_or(policy.default_cpus).nano_cpus()),
        pids_limit: Some(params.pids_limit.unwrap_or(policy.default_pids)),
        privileged: Some(params.privileged),
        readonly_rootfs: Some(params.read_only),
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add: Some(cap_add(params)),
        security_opt: Some(security_opt(params)),
        init: Some(params.init),
        oom_kill_disable: params.oom_kill_disable.then_some(true),
        // Never Docker's AutoRemove: it destroys exit code, OOM flag and outputs (F8).
        auto_remove: Some(false),
        restart_policy: Some(restart_policy(params)),
        log_config: Some(log_config(params, cfg, &mut warnings)),
        mounts: Some(mounts(params)),
        tmpfs: (!params.tmpfs.is_empty()).then(|| {
            params
                .tmpfs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        shm_size: params.shm_size.map(ByteSize::as_i64),
        network_mode: params
            .network
            .clone()
            .or_else(|| params.network_mode.clone()),
        pid_mode: params.pid_mode.clone(),
        ipc_mode: params.ipc_mode.clone(),
        uts_mode: params.uts_mode.clone(),
        userns_mode: params.userns_mode.clone(),
        dns: (!params.dns.is_empty()).then(|| params.dns.clone()),
        extra_hosts: (!params.extra_hosts.is_empty()).then(|| params.extra_hosts.clone()),
        port_bindings: (!params.ports.is_empty()).then(|| port_bindings(params)),
        devices: (!params.devices.is_empty()).then(|| {
            params
                .devices
                .iter()
                .map(|d| DeviceMapping {
                    path_on_host: Some(d.host_path.clone()),
                    path_in_container: Some(
                        d.container_path
                            .clone()
                            .unwrap_or_else(|| d.host_path.clone()),
                    ),
                    cgroup_permissions: Some(
                        d.permissions.clone().unwrap_or_else(|| "rwm".to_string()),
                    ),
                })
                .collect()
        }),
        device_requests: (!params.device_requests.is_empty()).then(|| {
            params
                .device_requests
                .iter()
                .map(|r| DeviceRequest {
                    driver: r.driver.clone(),
                    count: r.count,
                    device_ids: (!r.device_ids.is_empty()).then(|| r.device_ids.clone()),
                    capabilities: (!r.capabilities.is_empty()).then(|| r.capabilities.clone()),
                    options: (!r.options.is_empty()).then(|| {
                        r.options
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    }),
                })
                .collect()
        }),
        ulimits: (!params.ulimits.is_empty()).then(|| {
            params
                .ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect()
        }),
        ..Default::default()
    };
    if params.ulimits.iter().any(|u| u.name == "nproc") {
        warnings.push(
            "ulimits.nproc counts processes per host user, not per container; \
             pids_limit is what bounds this container"
                .to_string(),
        );
    }

    let body = ContainerCreateBody {
        image: Some(image),
        cmd: params.command.clone(),
        entrypoint: params.entrypoint.clone(),
        env: Some(
            resolved_env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        labels: Some(labels(params, ident)),
        user: params.user.clone(),
        working_dir: params.working_dir.clone(),
        hostname: params.hostname.clone(),
        // Batch runs: framed, unbuffered output and no stdin (trap 11).
        tty: Some(false),
        open_stdin: Some(false),
        stdin_once: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        exposed_ports: (!params.ports.is_empty()).then(|| {
            params
                .ports
                .iter()
                .map(|p| format!("{}/{}", p.container_port, p.protocol.as_str()))
                .collect()
        }),
        // What `docker stop` without `-t` would use; our own stops pass the grace explicitly.
        stop_timeout: Some(i64::try_from(params.stop_grace.0.as_secs()).unwrap_or(i64::MAX)),
        healthcheck: params.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: h.interval.map(nanos),
            timeout: h.timeout.map(nanos),
            retries: h.retries,
            start_period: h.start_period.map(nanos),
            ..Default::default()
        }),
        host_config: Some(host_config),
        ..Default::default()
    };
    (body, warnings)
}

/// User labels first, then ours, so ours always win. `validate` already refuses user keys
/// under the reserved prefix; filtering again keeps this function safe on its own.
fn labels(params: &DockerRunParams, ident: &RunIdentity) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = params
        .labels
        .iter()
        .filter(|(k, _)| !k.to_ascii_lowercase().starts_with(RESERVED_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut put = |k: &str, v: String| {
        l.insert(k.to_string(), v);
    };
    put(labels::MANAGED, "true".into());
    put(labels::ACTIVITY_ID, ident.activity_id.to_string());
    if let Some(run) = ident.workflow_run_id {
        put(labels::WORKFLOW_RUN_ID, run.to_string());
    }
    put(labels::TENANT_ID, ident.tenant_id.clone());
    put(labels::WORKER_ID, ident.worker_id.to_string());
    put(labels::ATTEMPT, ident.attempt.to_string());
    put(labels::DEPLOYMENT, ident.deployment.clone());
    put(labels::DETACHED, params.detach.to_string());
    let ttl = if params.detach {
        Some(params.detach_ttl)
    } else if !params.auto_remove {
        params.retention
    } else {
        None
    };
    if let Some(ttl) = ttl {
        put(labels::TTL_SECONDS, ttl.0.as_secs().to_string());
    }
    l
}

/// Allowed adds, normalised (`cap_net_admin` → `NET_ADMIN`), deduplicated, sorted.
fn cap_add(params: &DockerRunParams) -> Vec<String> {
    let mut caps: Vec<String> = params
        .cap_add
        .iter()
        .map(|c| {
            highway_workflows::docker::normalize_capability(c)
                .map(str::to_string)
                .unwrap_or_else(|| c.to_ascii_uppercase())
        })
        .collect();
    caps.sort();
    caps.dedup();
    caps
}

/// `no-new-privileges` always, then the user's entries (already policy-checked).
fn security_opt(params: &DockerRunParams) -> Vec<String> {
    let mut opts = vec!["no-new-privileges".to_string()];
    for o in &params.security_opt {
        let redundant = matches!(
            o.as_str(),
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
        );
        if !redundant && !opts.contains(o) {
            opts.push(o.clone());
        }
    }
    opts
}

fn restart_policy(params: &DockerRunParams) -> RestartPolicy {
    // Managed runs never restart: a restarted container would lose its exit code.
    // `validate` only lets other policies through with `detach: true`.
    let name = match params.restart_policy.as_ref().map(|r| r.name) {
        Some(RestartPolicyName::Always) if params.detach => RestartPolicyNameEnum::ALWAYS,
        Some(RestartPolicyName::UnlessStopped) if params.detach => {
            RestartPolicyNameEnum::UNLESS_STOPPED
        }
        Some(RestartPolicyName::OnFailure) if params.detach => RestartPolicyNameEnum::ON_FAILURE,
        _ => RestartPolicyNameEnum::NO,
    };
    let maximum_retry_count = match name {
        RestartPolicyNameEnum::ON_FAILURE => params
            .restart_policy
            .as_ref()
            .and_then(|r| r.maximum_retry_count),
        _ => None,
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count,
    }
}

/// json-file (or the user's local driver) with `max-size`/`max-file` never above the
/// operator's cap: the daemon's copy of the logs must not fill the host's disk.
fn log_config(
    params: &DockerRunParams,
    cfg: &DockerConfig,
    warnings: &mut Vec<String>,
) -> HostConfigLogConfig {
    let driver = params
        .log_config
        .as_ref()
        .map(|l| l.driver.clone())
        .unwrap_or_else(|| "json-file".to_string());
    if driver == "none" {
        return HostConfigLogConfig {
            typ: Some(driver),
            config: None,
        };
    }
    let user = params.log_config.as_ref().map(|l| &l.config);
    let mut config: HashMap<String, String> = HashMap::new();
    let cap = cfg.log_max_size;
    let size = match user.and_then(|c| c.get("max-size")) {
        Some(s) => match s.parse::<ByteSize>() {
            Ok(b) if b <= cap && b.0 > 0 => b,
            _ => {
                warnings.push(format!(
                    "log_config.config.max-size replaced by the operator's cap of {cap}"
                ));
                cap
            }
        },
        None => cap,
    };
    config.insert("max-size".into(), size.to_string());
    let files = match user.and_then(|c| c.get("max-file")) {
        Some(f) => match f.parse::<u32>() {
            Ok(n) if n >= 1 && n <= cfg.log_max_file => n,
            _ => {
                warnings.push(format!(
                    "log_config.config.max-file replaced by the operator's cap of {}",
                    cfg.log_max_file
                ));
                cfg.log_max_file
            }
        },
        None => cfg.log_max_file,
    };
    config.insert("max-file".into(), files.to_string());
    if let Some(user) = user {
        for k in user.keys() {
            if k != "max-size" && k != "max-file" {
                warnings.push(format!(
                    "log_config.config.{k} ignored: only max-size and max-file are passed"
                ));
            }
        }
    }
    HostConfigLogConfig {
        typ: Some(driver),
        config: Some(config),
    }
}

/// Typed mounts rather than `Binds` strings: no `:`-parsing ambiguity, and a missing bind
/// source is an error instead of a silently created root-owned directory.
fn mounts(params: &DockerRunParams) -> Vec<Mount> {
    params
        .volumes
        .iter()
        .map(|v| Mount {
            target: Some(v.target.clone()),
            source: v.source.clone(),
            typ: Some(match v.kind() {
                VolumeKind::Bind => MountType::BIND,
                VolumeKind::Named | VolumeKind::Anonymous => MountType::VOLUME,
            }),
            read_only: Some(v.read_only),
            ..Default::default()
        })
        .collect()
}

fn port_bindings(params: &DockerRunParams) -> HashMap<String, Option<Vec<PortBinding>>> {
    let mut map: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &params.ports {
        let key = format!("{}/{}", p.container_port, p.protocol.as_str());
        let binding = PortBinding {
            host_ip: p.host_ip.clone(),
            host_port: Some(p.host_port.map(|h| h.to_string()).unwrap_or_default()),
        };
        map.entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    map
}
