//! The operator's security policy applied to validated `tools.docker.run` parameters:
//! what a tenant may not ask for (privileged, host namespaces, extra capabilities, host
//! binds, devices, the Docker socket in any form, unconfined security options,
//! `oom_kill_disable`, images off the allow-list, limits above the maximums), and the
//! warnings for limits that will be defaulted.
//!
//! Pure: no I/O. `DockerRunParams::validate` runs first (grammar and shape); this module
//! only judges what is *allowed*. Errors name the field and never echo an environment
//! value, which may be a secret.

use crate::config::docker::SecurityPolicy;
use highway_workflows::docker::{
    is_under, normalize_capability, DockerRunParams, EnvValue, VolumeKind,
};

/// The API error code of every refusal from this module.
pub const CODE: &str = "policy_violation";

/// Host paths through which a container could reach a container runtime's control
/// socket. A bind of any of these, or of a directory above one, is refused.
const RUNTIME_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/docker",
    "/run/docker",
    "/var/run/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
    "/var/run/podman/podman.sock",
    "/run/podman/podman.sock",
    "/var/lib/docker",
];

/// Which rule refused the run; callers and audit rows branch on [`Refusal::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    Privileged,
    HostNamespace,
    Capability,
    HostBind,
    NamedVolume,
    DockerSocket,
    Device,
    SecurityOpt,
    OomKillDisable,
    Image,
    LimitAboveMaximum,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged_not_allowed",
            Self::HostNamespace => "host_namespace_not_allowed",
            Self::Capability => "capability_not_allowed",
            Self::HostBind => "host_bind_not_allowed",
            Self::NamedVolume => "named_volume_not_allowed",
            Self::DockerSocket => "docker_socket_not_allowed",
            Self::Device => "devices_not_allowed",
            Self::SecurityOpt => "security_opt_not_allowed",
            Self::OomKillDisable => "oom_kill_disable_not_allowed",
            Self::Image => "image_not_allowed",
            Self::LimitAboveMaximum => "limit_above_maximum",
        }
    }
}

/// A run the operator's policy does not allow. Non-retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by the security policy: `{field}`: {reason}")]
pub struct PolicyError {
    pub refusal: Refusal,
    pub field: String,
    pub reason: String,
}

impl PolicyError {
    fn new(refusal: Refusal, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            refusal,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The API error code, the same for every refusal: [`CODE`].
    pub fn code(&self) -> &'static str {
        CODE
    }
}

/// Judges `params` (already validated) against `policy`. `Ok` carries warnings for the
/// result: the resource limits that were missing and will be defaulted by
/// `spec::container_config` (which adds no warnings of its own for those).
pub fn check(
    params: &DockerRunParams,
    policy: &SecurityPolicy,
) -> Result<Vec<String>, PolicyError> {
    check_image(params, policy)?;
    check_namespaces(params, policy)?;
    check_capabilities(params, policy)?;
    check_mounts(params, policy)?;
    check_devices(params, policy)?;
    check_env(params)?;
    check_security_opts(params, policy)?;
    if params.oom_kill_disable && !policy.allow_oom_kill_disable {
        return Err(PolicyError::new(
            Refusal::OomKillDisable,
            "oom_kill_disable",
            "is not allowed: a container that cannot be OOM-killed can take the host's memory",
        ));
    }
    check_limits(params, policy)
}

fn check_image(params: &DockerRunParams, policy: &SecurityPolicy) -> Result<(), PolicyError> {
    let patterns: Vec<&str> = nonempty(&policy.allowed_images).collect();
    if patterns.is_empty() {
        return Ok(());
    }
    // Match the normalised form (`busybox:latest`) and the bare repository name, so both
    // `busybox:*` and `busybox` work as patterns.
    let (full, name) = match params.image_ref() {
        Ok(r) => (r.to_string(), r.name()),
        Err(_) => (params.image.clone(), params.image.clone()),
    };
    if patterns
        .iter()
        .any(|p| glob_match(p, &full) || glob_match(p, &name))
    {
        Ok(())
    } else {
        Err(PolicyError::new(
            Refusal::Image,
            "image",
            "is not on the operator's list of allowed images",
        ))
    }
}

fn check_namespaces(params: &DockerRunParams, policy: &SecurityPolicy) -> Result<(), PolicyError> {
    if params.privileged && !policy.allow_privileged {
        return Err(PolicyError::new(
            Refusal::Privileged,
            "privileged",
            "privileged containers are not allowed",
        ));
    }
    let host = |v: &Option<String>| v.as_deref() == Some("host");
    let modes = [
        (
            "network_mode",
            host(&params.network_mode) || host(&params.network),
            policy.allow_host_network,
        ),
        ("pid_mode", host(&params.pid_mode), policy.allow_host_pid),
        ("ipc_mode", host(&params.ipc_mode), policy.allow_host_ipc),
        ("uts_mode", host(&params.uts_mode), policy.allow_host_uts),
        (
            "userns_mode",
            host(&params.userns_mode),
            policy.allow_host_userns,
        ),
    ];
    for (field, wants_host, allowed) in modes {
        if wants_host && !allowed {
            return Err(PolicyError::new(
                Refusal::HostNamespace,
                field,
                "sharing the host's namespace is not allowed",
            ));
        }
    }
    Ok(())
}

fn check_capabilities(
    params: &DockerRunParams,
    policy: &SecurityPolicy,
) -> Result<(), PolicyError> {
    let allow_all = nonempty(&policy.cap_add_allowlist).any(|c| c.eq_ignore_ascii_case("ALL"));
    let allowed: Vec<&str> = nonempty(&policy.cap_add_allowlist)
        .filter_map(normalize_capability)
        .collect();
    for (i, c) in params.cap_add.iter().enumerate() {
        let ok = allow_all || normalize_capability(c).is_some_and(|n| allowed.contains(&n));
        if !ok {
            return Err(PolicyError::new(
                Refusal::Capability,
                format!("cap_add[{i}]"),
                format!(
                    "capability {} is not in the operator's allowlist",
                    c.chars().take(32).collect::<String>()
                ),
            ));
        }
    }
    Ok(())
}

/// True when a host path is, contains, or is likely to be a runtime control socket.
fn touches_runtime_socket(host_path: &str) -> bool {
    let lower = host_path.to_ascii_lowercase();
    lower.contains("docker.sock")
        || lower.contains("containerd.sock")
        || lower.contains("podman.sock")
        || RUNTIME_SOCKETS
            .iter()
            .any(|s| is_under(s, host_path) || is_under(host_path, s))
}

fn check_mounts(params: &DockerRunParams, policy: &SecurityPolicy) -> Result<(), PolicyError> {
    for (i, v) in params.volumes.iter().enumerate() {
        let field = format!("volumes[{i}].source");
        let src = v.source.as_deref().unwrap_or_default();
        match v.kind() {
            VolumeKind::Anonymous => {}
            VolumeKind::Bind => {
                if touches_runtime_socket(src) {
                    return Err(PolicyError::new(
                        Refusal::DockerSocket,
                        field,
                        "mounting a container runtime socket (or a directory holding one) is never allowed",
                    ));
                }
                // Lexical check only: the daemon resolves symlinks on the host, so
                // operators must list prefixes that tenants cannot write symlinks into.
                let ok = nonempty(&policy.bind_allowed_prefixes).any(|p| is_under(src, p));
                if !ok {
                    return Err(PolicyError::new(
                        Refusal::HostBind,
                        field,
                        "host bind mounts outside the operator's allowed prefixes are not allowed",
                    ));
                }
            }
            VolumeKind::Named => {
                if touches_runtime_socket(src) {
                    return Err(PolicyError::new(
                        Refusal::DockerSocket,
                        field,
                        "a volume named after a runtime socket is not allowed",
                    ));
                }
                // Named volumes outlive the run and are visible to every tenant on the host.
                if !policy.allow_named_volumes {
                    return Err(PolicyError::new(
                        Refusal::NamedVolume,
                        field,
                        "named volumes are shared across runs and tenants and are not allowed; \
                         use an anonymous volume (target only)",
                    ));
                }
            }
        }
        if v.target.to_ascii_lowercase().contains("docker.sock") {
            return Err(PolicyError::new(
                Refusal::DockerSocket,
                format!("volumes[{i}].target"),
                "mounting anything at a docker.sock path is not allowed",
            ));
        }
    }
    Ok(())
}

fn check_devices(params: &DockerRunParams, policy: &SecurityPolicy) -> Result<(), PolicyError> {
    for (i, d) in params.devices.iter().enumerate() {
        if touches_runtime_socket(&d.host_path) {
            return Err(PolicyError::new(
                Refusal::DockerSocket,
                format!("devices[{i}].host_path"),
                "a container runtime socket is never allowed",
            ));
        }
    }
    if !policy.allow_devices {
        if !params.devices.is_empty() {
            return Err(PolicyError::new(
                Refusal::Device,
                "devices",
                "host devices are not allowed",
            ));
        }
        if !params.device_requests.is_empty() {
            return Err(PolicyError::new(
                Refusal::Device,
                "device_requests",
                "device requests (GPUs) are not allowed",
            ));
        }
    }
    Ok(())
}

/// An environment pointing a Docker client at the host daemon is how socket access is
/// usually wired; refuse it even though without a mount it would not connect.
fn check_env(params: &DockerRunParams) -> Result<(), PolicyError> {
    for (name, value) in &params.environment {
        let EnvValue::Plain(v) = value else { continue };
        let lower = v.to_ascii_lowercase();
        let points_at_socket = lower.contains("docker.sock")
            || lower.contains("containerd.sock")
            || (name == "DOCKER_HOST" && lower.starts_with("unix://"));
        if points_at_socket {
            return Err(PolicyError::new(
                Refusal::DockerSocket,
                format!("environment.{name}"),
                "pointing at a container runtime socket is not allowed",
            ));
        }
    }
    Ok(())
}

/// `security_opt` entries that only tighten confinement; anything else needs the
/// operator's `allow_unconfined_security_opts`.
fn is_confining_security_opt(opt: &str) -> bool {
    let (key, value) = match opt.split_once(['=', ':']) {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    match (key, value) {
        ("no-new-privileges", None | Some("true")) => true,
        ("apparmor", Some(p)) => !p.is_empty() && p != "unconfined",
        ("label", Some(l)) => {
            ["user:", "role:", "type:", "level:"]
                .iter()
                .any(|k| l.starts_with(k))
                && !l.contains("spc_t")
                && !l.contains("unconfined")
        }
        _ => false,
    }
}

fn check_security_opts(
    params: &DockerRunParams,
    policy: &SecurityPolicy,
) -> Result<(), PolicyError> {
    if policy.allow_unconfined_security_opts {
        return Ok(());
    }
    for (i, s) in params.security_opt.iter().enumerate() {
        if !is_confining_security_opt(s) {
            return Err(PolicyError::new(
                Refusal::SecurityOpt,
                format!("security_opt[{i}]"),
                "only no-new-privileges, apparmor=<profile> and label=<user|role|type|level:…> \
                 are allowed (no seccomp profiles, no unconfined options)",
            ));
        }
    }
    Ok(())
}

fn check_limits(
    params: &DockerRunParams,
    policy: &SecurityPolicy,
) -> Result<Vec<String>, PolicyError> {
    let mut warnings = Vec::new();
    let above = |field: &str, asked: String, max: String| {
        PolicyError::new(
            Refusal::LimitAboveMaximum,
            field,
            format!("{asked} is above the operator's maximum of {max}"),
        )
    };
    match params.memory_limit {
        Some(m) if m > policy.max_memory => {
            return Err(above(
                "memory_limit",
                m.to_string(),
                policy.max_memory.to_string(),
            ))
        }
        Some(_) => {}
        None => warnings.push(format!(
            "memory_limit not set; applied the default of {}",
            policy.default_memory
        )),
    }
    match params.cpu_limit {
        Some(c) if c > policy.max_cpus => {
            return Err(above(
                "cpu_limit",
                c.to_string(),
                policy.max_cpus.to_string(),
            ))
        }
        Some(_) => {}
        None => warnings.push(format!(
            "cpu_limit not set; applied the default of {} CPUs",
            policy.default_cpus
        )),
    }
    if let Some(p) = params.pids_limit {
        if p > policy.max_pids {
            return Err(above(
                "pids_limit",
                p.to_string(),
                policy.max_pids.to_string(),
            ));
        }
    }
    if let Some(s) = params.shm_size {
        if s > policy.max_memory {
            return Err(above(
                "shm_size",
                s.to_string(),
                policy.max_memory.to_string(),
            ));
        }
    }
    Ok(warnings)
}

fn nonempty(v: &[String]) -> impl Iterator<Item = &str> {
    v.iter().map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// `*` matches any run of characters (including `/`), `?` exactly one; everything else
/// literally. Iterative with one backtrack point, so hostile patterns stay linear-ish.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}
