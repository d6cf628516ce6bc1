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
    /// The database's deployment identity (`highway.settings`): a container is ours
    /// only with our name *and* this.
    pub const DEPLOYMENT_ID: &str = "highway.deployment_id";
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
    pub deployment_id: Uuid,
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
    put(labels::DEPLOYMENT_ID, ident.deployment_id.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ident() -> RunIdentity {
        RunIdentity {
            activity_id: Uuid::parse_str("0190f1c2-aaaa-7bbb-8ccc-0123456789ab").unwrap(),
            attempt: 2,
            tenant_id: "acme".into(),
            workflow_run_id: Some(Uuid::nil()),
            worker_id: Uuid::max(),
            deployment: "prod".into(),
            deployment_id: Uuid::parse_str("0190f1c2-dddd-7eee-8fff-0123456789ab").unwrap(),
        }
    }

    fn build(extra: serde_json::Value) -> (serde_json::Value, Vec<String>) {
        let mut v = json!({"image": "busybox"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        let p = DockerRunParams::from_json(&v).unwrap();
        let env = [
            ("A".to_string(), "1".to_string()),
            ("S".to_string(), "x=y".to_string()),
        ];
        let (body, w) = container_config(&p, &DockerConfig::default(), &ident(), &env);
        // Assert on the wire form: the field names the Engine API receives.
        (serde_json::to_value(&body).unwrap(), w)
    }

    #[test]
    fn name_is_deterministic() {
        let id = ident().activity_id;
        assert_eq!(
            container_name(id, 2),
            "highway-0190f1c2aaaa7bbb8ccc0123456789ab-2"
        );
        assert_eq!(container_name(id, 2), container_name(id, 2));
        assert_ne!(container_name(id, 1), container_name(id, 2));
    }

    #[test]
    fn secure_defaults() {
        let (b, w) = build(json!({}));
        assert!(w.is_empty(), "{w:?}");
        let h = &b["HostConfig"];
        assert_eq!(b["Image"], "busybox:latest");
        assert_eq!(b["Tty"], false);
        assert_eq!(b["OpenStdin"], false);
        assert_eq!(b["AttachStdin"], false);
        assert_eq!(b["AttachStdout"], true);
        assert_eq!(b["AttachStderr"], true);
        assert_eq!(b["StopTimeout"], 10);
        assert_eq!(b["Env"], json!(["A=1", "S=x=y"]));
        assert_eq!(h["Privileged"], false);
        assert_eq!(h["CapDrop"], json!(["ALL"]));
        assert_eq!(h["CapAdd"], json!([]));
        assert_eq!(h["SecurityOpt"], json!(["no-new-privileges"]));
        assert_eq!(h["Init"], true);
        assert_eq!(h["AutoRemove"], false);
        assert_eq!(h["RestartPolicy"]["Name"], "no");
        assert_eq!(h["PidsLimit"], 512);
        assert_eq!(h["Memory"], 512 * 1024 * 1024);
        assert_eq!(h["MemorySwap"], 512 * 1024 * 1024);
        assert_eq!(h["NanoCpus"], 1_000_000_000);
        assert_eq!(h["ReadonlyRootfs"], false);
        assert_eq!(
            h["LogConfig"],
            json!({"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}})
        );
        assert!(h.get("OomKillDisable").is_none());
        assert!(h.get("NetworkMode").is_none());
        assert_eq!(h["Mounts"], json!([]));
    }

    #[test]
    fn labels_identify_the_attempt() {
        let (b, _) = build(json!({"labels": {"team": "data"}}));
        let l = &b["Labels"];
        assert_eq!(l["highway.managed"], "true");
        assert_eq!(
            l["highway.activity_id"],
            "0190f1c2-aaaa-7bbb-8ccc-0123456789ab"
        );
        assert_eq!(l["highway.workflow_run_id"], Uuid::nil().to_string());
        assert_eq!(l["highway.tenant_id"], "acme");
        assert_eq!(l["highway.worker_id"], Uuid::max().to_string());
        assert_eq!(l["highway.attempt"], "2");
        assert_eq!(l["highway.deployment"], "prod");
        assert_eq!(
            l["highway.deployment_id"],
            "0190f1c2-dddd-7eee-8fff-0123456789ab"
        );
        assert_eq!(l["highway.detached"], "false");
        assert!(l.get("highway.ttl_seconds").is_none());
        assert_eq!(l["team"], "data");

        let mut p = DockerRunParams::new("busybox");
        // Even unvalidated params cannot forge our labels.
        p.labels.insert("highway.tenant_id".into(), "other".into());
        p.labels.insert("Highway.managed".into(), "false".into());
        let mut id = ident();
        id.workflow_run_id = None;
        let (body, _) = container_config(&p, &DockerConfig::default(), &id, &[]);
        let l = body.labels.unwrap();
        assert_eq!(l["highway.tenant_id"], "acme");
        assert!(!l.contains_key("Highway.managed"));
        assert!(!l.contains_key("highway.workflow_run_id"));
    }

    #[test]
    fn ttl_labels_for_detached_and_kept_runs() {
        let (b, _) = build(json!({"detach": true, "detach_ttl": "2h"}));
        assert_eq!(b["Labels"]["highway.detached"], "true");
        assert_eq!(b["Labels"]["highway.ttl_seconds"], "7200");
        let (b, _) = build(json!({"auto_remove": false, "retention": "10m"}));
        assert_eq!(b["Labels"]["highway.ttl_seconds"], "600");
        assert_eq!(b["HostConfig"]["AutoRemove"], false);
    }

    #[test]
    fn explicit_settings_pass_through() {
        let (b, w) = build(json!({
            "command": ["echo", "hi"], "entrypoint": ["/bin/sh", "-c"],
            "user": "65534:65534", "working_dir": "/work", "hostname": "job",
            "memory_limit": "1g", "cpu_limit": "0.5", "pids_limit": 64,
            "cap_add": ["cap_chown", "CHOWN", "net_bind_service"],
            "security_opt": ["no-new-privileges:true", "apparmor=docker-default"],
            "init": false, "read_only": true, "shm_size": "64m",
            "tmpfs": {"/tmp": "size=16m"}, "dns": ["1.1.1.1"], "extra_hosts": ["db:10.0.0.1"],
            "network": "backend", "pid_mode": "host", "ipc_mode": "shareable",
            "oom_kill_disable": true, "stop_grace": "3s",
            "ulimits": [{"name": "nofile", "soft": 10, "hard": 20}],
            "healthcheck": {"test": ["CMD", "true"], "interval": "2s", "retries": 1},
            "devices": ["/dev/fuse"],
            "device_requests": [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}],
        }));
        assert!(w.is_empty(), "{w:?}");
        let h = &b["HostConfig"];
        assert_eq!(b["Cmd"], json!(["echo", "hi"]));
        assert_eq!(b["Entrypoint"], json!(["/bin/sh", "-c"]));
        assert_eq!(b["User"], "65534:65534");
        assert_eq!(b["WorkingDir"], "/work");
        assert_eq!(b["Hostname"], "job");
        assert_eq!(b["StopTimeout"], 3);
        assert_eq!(
            b["Healthcheck"],
            json!({"Test": ["CMD", "true"], "Interval": 2_000_000_000i64, "Retries": 1})
        );
        assert_eq!(h["Memory"], 1i64 << 30);
        assert_eq!(h["NanoCpus"], 500_000_000);
        assert_eq!(h["PidsLimit"], 64);
        assert_eq!(h["CapAdd"], json!(["CHOWN", "NET_BIND_SERVICE"]));
        assert_eq!(h["CapDrop"], json!(["ALL"]));
        assert_eq!(
            h["SecurityOpt"],
            json!(["no-new-privileges", "apparmor=docker-default"])
        );
        assert_eq!(h["Init"], false);
        assert_eq!(h["ReadonlyRootfs"], true);
        assert_eq!(h["ShmSize"], 64 << 20);
        assert_eq!(h["Tmpfs"], json!({"/tmp": "size=16m"}));
        assert_eq!(h["Dns"], json!(["1.1.1.1"]));
        assert_eq!(h["ExtraHosts"], json!(["db:10.0.0.1"]));
        assert_eq!(h["NetworkMode"], "backend");
        assert_eq!(h["PidMode"], "host");
        assert_eq!(h["IpcMode"], "shareable");
        assert_eq!(h["OomKillDisable"], true);
        assert_eq!(
            h["Ulimits"],
            json!([{"Name": "nofile", "Soft": 10, "Hard": 20}])
        );
        assert_eq!(
            h["Devices"],
            json!([{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"}])
        );
        assert_eq!(
            h["DeviceRequests"],
            json!([{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}])
        );
    }

    #[test]
    fn mounts_are_typed() {
        let (b, _) = build(json!({"volumes": ["/srv/data:/data:ro", "cache:/cache", "/scratch"]}));
        assert_eq!(
            b["HostConfig"]["Mounts"],
            json!([
                {"Target": "/data", "Source": "/srv/data", "Type": "bind", "ReadOnly": true},
                {"Target": "/cache", "Source": "cache", "Type": "volume", "ReadOnly": false},
                {"Target": "/scratch", "Type": "volume", "ReadOnly": false},
            ])
        );
        assert!(b["HostConfig"].get("Binds").is_none());
    }

    #[test]
    fn ports() {
        let (b, _) = build(json!({"ports": ["8080:80", "127.0.0.1:9000:80", "53/udp"]}));
        let mut exposed: Vec<String> = serde_json::from_value(serde_json::Value::Array(
            b["ExposedPorts"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| json!(k))
                .collect(),
        ))
        .unwrap();
        exposed.sort();
        assert_eq!(exposed, ["53/udp", "80/tcp"]);
        let pb = &b["HostConfig"]["PortBindings"];
        assert_eq!(
            pb["80/tcp"],
            json!([{"HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "9000"}])
        );
        assert_eq!(pb["53/udp"], json!([{"HostPort": ""}]));
    }

    #[test]
    fn log_caps_are_enforced() {
        let (b, w) = build(
            json!({"log_config": {"type": "json-file", "config": {"max-size": "1m", "max-file": "1"}}}),
        );
        assert!(w.is_empty());
        assert_eq!(
            b["HostConfig"]["LogConfig"]["Config"],
            json!({"max-size": "1m", "max-file": "1"})
        );
        let (b, w) = build(
            json!({"log_config": {"type": "local", "config": {"max-size": "1g", "max-file": "9", "compress": "true"}}}),
        );
        assert_eq!(b["HostConfig"]["LogConfig"]["Type"], "local");
        assert_eq!(
            b["HostConfig"]["LogConfig"]["Config"],
            json!({"max-size": "10m", "max-file": "2"})
        );
        assert_eq!(w.len(), 3, "{w:?}");
        let (b, w) =
            build(json!({"log_config": {"type": "json-file", "config": {"max-size": "huge"}}}));
        assert_eq!(b["HostConfig"]["LogConfig"]["Config"]["max-size"], "10m");
        assert_eq!(w.len(), 1);
        let (b, _) = build(json!({"log_config": {"type": "none"}}));
        assert_eq!(b["HostConfig"]["LogConfig"], json!({"Type": "none"}));
    }

    #[test]
    fn restart_policy_only_for_detached() {
        let (b, _) = build(
            json!({"restart_policy": {"name": "on-failure", "maximum_retry_count": 3}, "detach": true}),
        );
        assert_eq!(
            b["HostConfig"]["RestartPolicy"],
            json!({"Name": "on-failure", "MaximumRetryCount": 3})
        );
        let (b, _) = build(json!({"restart_policy": "unless-stopped", "detach": true}));
        assert_eq!(b["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
        // Unvalidated params asking for a restart on a managed run still get `no`.
        let mut p = DockerRunParams::new("busybox");
        p.restart_policy = Some(highway_workflows::docker::RestartPolicy {
            name: RestartPolicyName::Always,
            maximum_retry_count: None,
        });
        let (body, _) = container_config(&p, &DockerConfig::default(), &ident(), &[]);
        let rp = body.host_config.unwrap().restart_policy.unwrap();
        assert_eq!(rp.name, Some(RestartPolicyNameEnum::NO));
    }

    #[test]
    fn nproc_warns() {
        let (_, w) = build(json!({"ulimits": [{"name": "nproc", "soft": 10, "hard": 10}]}));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("pids_limit"));
    }

    #[test]
    fn unit_helpers() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert!(parse_memory("x").is_err());
        assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert!(parse_cpus("0").is_err());
    }

    #[test]
    fn operator_defaults_apply() {
        let mut cfg = DockerConfig::default();
        cfg.policy.default_memory = ByteSize::mib(128);
        cfg.policy.default_pids = 64;
        cfg.log_max_size = ByteSize::mib(1);
        let (body, _) = container_config(&DockerRunParams::new("busybox"), &cfg, &ident(), &[]);
        let h = body.host_config.unwrap();
        assert_eq!(h.memory, Some(128 << 20));
        assert_eq!(h.pids_limit, Some(64));
        assert_eq!(h.log_config.unwrap().config.unwrap()["max-size"], "1m");
    }
}
