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

/// Whether a tenant may see `reference` (an image tag on the daemon) in an image
/// listing although it does not own it: only when the operator's allow-list names it.
/// With no allow-list, every image may be run but none of the host's is listed: the
/// daemon also holds other stacks' and the operator's images.
pub fn lists_image(policy: &SecurityPolicy, reference: &str) -> bool {
    let patterns: Vec<&str> = nonempty(&policy.allowed_images).collect();
    if patterns.is_empty() {
        return false;
    }
    let (full, name) = match highway_workflows::docker::ImageRef::parse(reference) {
        Ok(r) => (r.to_string(), r.name()),
        Err(_) => return false,
    };
    patterns
        .iter()
        .any(|p| glob_match(p, &full) || glob_match(p, &name))
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

#[cfg(test)]
mod tests {
    use super::*;
    use highway_workflows::docker::{ByteSize, Cpus};
    use serde_json::json;

    fn params(extra: serde_json::Value) -> DockerRunParams {
        let mut v = json!({"image": "busybox", "memory_limit": "256m", "cpu_limit": 1});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        DockerRunParams::from_json(&v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    fn refused_with(
        extra: serde_json::Value,
        policy: &SecurityPolicy,
        refusal: Refusal,
        field: &str,
    ) {
        let e = check(&params(extra.clone()), policy).expect_err(&extra.to_string());
        assert_eq!((e.refusal, e.field.as_str()), (refusal, field), "{e}");
        assert_eq!(e.code(), "policy_violation");
        assert!(e.to_string().contains(field));
    }

    fn refused(extra: serde_json::Value, refusal: Refusal, field: &str) {
        refused_with(extra, &SecurityPolicy::default(), refusal, field);
    }

    fn allowed(extra: serde_json::Value, policy: &SecurityPolicy) {
        check(&params(extra.clone()), policy).unwrap_or_else(|e| panic!("{extra}: {e}"));
    }

    #[test]
    fn a_plain_run_passes_without_warnings() {
        let w = check(&params(json!({})), &SecurityPolicy::default()).unwrap();
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn missing_limits_warn() {
        let p = DockerRunParams::new("busybox");
        let w = check(&p, &SecurityPolicy::default()).unwrap();
        assert_eq!(
            w,
            [
                "memory_limit not set; applied the default of 512m",
                "cpu_limit not set; applied the default of 1 CPUs"
            ]
        );
    }

    #[test]
    fn privileged() {
        refused(
            json!({"privileged": true}),
            Refusal::Privileged,
            "privileged",
        );
        let p = SecurityPolicy {
            allow_privileged: true,
            ..Default::default()
        };
        allowed(json!({"privileged": true}), &p);
    }

    #[test]
    fn host_namespaces() {
        for (field, flag) in [
            ("network_mode", "allow_host_network"),
            ("pid_mode", "allow_host_pid"),
            ("ipc_mode", "allow_host_ipc"),
            ("uts_mode", "allow_host_uts"),
            ("userns_mode", "allow_host_userns"),
        ] {
            refused(json!({ field: "host" }), Refusal::HostNamespace, field);
            let mut p = SecurityPolicy::default();
            match flag {
                "allow_host_network" => p.allow_host_network = true,
                "allow_host_pid" => p.allow_host_pid = true,
                "allow_host_ipc" => p.allow_host_ipc = true,
                "allow_host_uts" => p.allow_host_uts = true,
                _ => p.allow_host_userns = true,
            }
            allowed(json!({ field: "host" }), &p);
        }
        allowed(
            json!({"network_mode": "bridge", "ipc_mode": "private"}),
            &SecurityPolicy::default(),
        );
        allowed(json!({"network_mode": "none"}), &SecurityPolicy::default());
    }

    #[test]
    fn capabilities() {
        refused(
            json!({"cap_add": ["NET_ADMIN"]}),
            Refusal::Capability,
            "cap_add[0]",
        );
        let p = SecurityPolicy {
            cap_add_allowlist: vec!["cap_net_bind_service".into(), "".into()],
            ..Default::default()
        };
        allowed(
            json!({"cap_add": ["NET_BIND_SERVICE", "cap_net_bind_service"]}),
            &p,
        );
        refused_with(
            json!({"cap_add": ["NET_BIND_SERVICE", "SYS_ADMIN"]}),
            &p,
            Refusal::Capability,
            "cap_add[1]",
        );
        refused_with(
            json!({"cap_add": ["ALL"]}),
            &p,
            Refusal::Capability,
            "cap_add[0]",
        );
        let all = SecurityPolicy {
            cap_add_allowlist: vec!["ALL".into()],
            ..Default::default()
        };
        allowed(json!({"cap_add": ["ALL", "SYS_ADMIN"]}), &all);
        // Dropping is always fine.
        allowed(json!({"cap_drop": ["NET_RAW"]}), &SecurityPolicy::default());
    }

    #[test]
    fn host_binds() {
        refused(
            json!({"volumes": ["/srv/data:/data"]}),
            Refusal::HostBind,
            "volumes[0].source",
        );
        let p = SecurityPolicy {
            bind_allowed_prefixes: vec!["/srv/data".into()],
            ..Default::default()
        };
        allowed(
            json!({"volumes": ["/srv/data:/data:ro", "/srv/data/x/:/x"]}),
            &p,
        );
        refused_with(
            json!({"volumes": ["/srv/database:/d"]}),
            &p,
            Refusal::HostBind,
            "volumes[0].source",
        );
        refused_with(
            json!({"volumes": ["/srv:/d"]}),
            &p,
            Refusal::HostBind,
            "volumes[0].source",
        );
        // Anonymous volumes are always fine.
        allowed(
            json!({"volumes": ["/scratch", {"target": "/out"}]}),
            &SecurityPolicy::default(),
        );
    }

    #[test]
    fn named_volumes() {
        refused(
            json!({"volumes": ["cache:/cache"]}),
            Refusal::NamedVolume,
            "volumes[0].source",
        );
        let p = SecurityPolicy {
            allow_named_volumes: true,
            ..Default::default()
        };
        allowed(json!({"volumes": ["cache:/cache"]}), &p);
    }

    #[test]
    fn docker_socket_in_any_form() {
        // Even an operator who allows binds from `/` cannot hand out the socket.
        let p = SecurityPolicy {
            bind_allowed_prefixes: vec!["/".into()],
            allow_devices: true,
            allow_named_volumes: true,
            ..Default::default()
        };
        for src in [
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/var/run",
            "/run",
            "/var",
            "/",
            "/run/containerd/containerd.sock",
            "/var/lib/docker/volumes",
            "/home/me/.docker/run/docker.sock",
            "/var//run/./docker.sock",
        ] {
            refused_with(
                json!({ "volumes": [format!("{src}:/mnt")] }),
                &p,
                Refusal::DockerSocket,
                "volumes[0].source",
            );
        }
        refused_with(
            json!({"volumes": ["docker.sock:/x"]}),
            &p,
            Refusal::DockerSocket,
            "volumes[0].source",
        );
        refused_with(
            json!({"volumes": ["/srv:/var/run/docker.sock"]}),
            &p,
            Refusal::DockerSocket,
            "volumes[0].target",
        );
        refused_with(
            json!({"devices": ["/var/run/docker.sock:/dev/d"]}),
            &p,
            Refusal::DockerSocket,
            "devices[0].host_path",
        );
        for (name, value) in [
            ("DOCKER_HOST", "unix:///var/run/docker.sock"),
            ("DOCKER_HOST", "unix:///custom/path"),
            ("SOCK", "/run/docker.sock"),
        ] {
            let e = check(&params(json!({ "environment": { name: value } })), &p).unwrap_err();
            assert_eq!(e.refusal, Refusal::DockerSocket);
            assert_eq!(e.field, format!("environment.{name}"));
            assert!(!e.to_string().contains(value), "values stay out of errors");
        }
        allowed(
            json!({"environment": {"DOCKER_HOST": "tcp://dind:2375"}}),
            &p,
        );
        allowed(json!({"volumes": ["/srv/data:/data"]}), &p);
    }

    #[test]
    fn devices() {
        refused(
            json!({"devices": ["/dev/fuse"]}),
            Refusal::Device,
            "devices",
        );
        refused(
            json!({"device_requests": [{"count": -1, "capabilities": [["gpu"]]}]}),
            Refusal::Device,
            "device_requests",
        );
        let p = SecurityPolicy {
            allow_devices: true,
            ..Default::default()
        };
        allowed(
            json!({"devices": ["/dev/fuse"], "device_requests": [{"count": 1}]}),
            &p,
        );
    }

    #[test]
    fn security_opts() {
        for opt in [
            "seccomp=unconfined",
            "seccomp:unconfined",
            "apparmor=unconfined",
            "apparmor:unconfined",
            "label=disable",
            "label:disable",
            "label=type:spc_t",
            "systempaths=unconfined",
            "no-new-privileges=false",
            "no-new-privileges:false",
            "seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}",
            "apparmor=",
        ] {
            refused(
                json!({ "security_opt": [opt] }),
                Refusal::SecurityOpt,
                "security_opt[0]",
            );
        }
        allowed(
            json!({"security_opt": ["no-new-privileges", "no-new-privileges:true", "apparmor=docker-default", "label=level:s0:c100,c200"]}),
            &SecurityPolicy::default(),
        );
        let p = SecurityPolicy {
            allow_unconfined_security_opts: true,
            ..Default::default()
        };
        allowed(json!({"security_opt": ["seccomp=unconfined"]}), &p);
    }

    #[test]
    fn oom_kill_disable() {
        refused(
            json!({"oom_kill_disable": true}),
            Refusal::OomKillDisable,
            "oom_kill_disable",
        );
        let p = SecurityPolicy {
            allow_oom_kill_disable: true,
            ..Default::default()
        };
        allowed(json!({"oom_kill_disable": true}), &p);
    }

    #[test]
    fn image_allow_list() {
        let p = SecurityPolicy {
            allowed_images: vec![
                "highway-test/*".into(),
                "busybox:1.*".into(),
                "localhost:5000/*".into(),
            ],
            ..Default::default()
        };
        for ok in [
            "highway-test/busybox",
            "highway-test/busybox:1",
            "busybox:1.36",
            "localhost:5000/highway-test/busybox:1",
        ] {
            allowed(json!({ "image": ok }), &p);
        }
        for bad in ["busybox", "busybox:latest", "evil/highway-test", "alpine:3"] {
            refused_with(json!({ "image": bad }), &p, Refusal::Image, "image");
        }
        // Empty list (or only empty entries from an empty variable): any image.
        let any = SecurityPolicy {
            allowed_images: vec!["".into()],
            ..Default::default()
        };
        allowed(json!({"image": "alpine"}), &any);
    }

    #[test]
    fn listing_follows_the_allow_list_only() {
        let open = SecurityPolicy::default();
        assert!(!lists_image(&open, "busybox:latest"));
        let listed = SecurityPolicy {
            allowed_images: vec!["highway-test/*".into(), "busybox".into()],
            ..SecurityPolicy::default()
        };
        assert!(lists_image(&listed, "highway-test/busybox:1"));
        assert!(lists_image(&listed, "busybox:1.36"));
        assert!(!lists_image(&listed, "other/busybox:1"));
        assert!(!lists_image(&listed, "<none>:<none>"));
    }

    #[test]
    fn limits_above_maximum() {
        let p = SecurityPolicy {
            max_memory: ByteSize::mib(1024),
            max_cpus: Cpus::from_millis(2000),
            max_pids: 100,
            ..Default::default()
        };
        refused_with(
            json!({"memory_limit": "2g"}),
            &p,
            Refusal::LimitAboveMaximum,
            "memory_limit",
        );
        refused_with(
            json!({"cpu_limit": 2.5}),
            &p,
            Refusal::LimitAboveMaximum,
            "cpu_limit",
        );
        refused_with(
            json!({"pids_limit": 101}),
            &p,
            Refusal::LimitAboveMaximum,
            "pids_limit",
        );
        refused_with(
            json!({"shm_size": "2g"}),
            &p,
            Refusal::LimitAboveMaximum,
            "shm_size",
        );
        allowed(
            json!({"memory_limit": "1g", "cpu_limit": 2, "pids_limit": 100, "shm_size": "1g"}),
            &p,
        );
        let e = check(&params(json!({"memory_limit": "2g"})), &p).unwrap_err();
        assert!(e.reason.contains("2g") && e.reason.contains("1g"), "{e}");
    }

    #[test]
    fn refusal_codes_are_distinct() {
        let all = [
            Refusal::Privileged,
            Refusal::HostNamespace,
            Refusal::Capability,
            Refusal::HostBind,
            Refusal::NamedVolume,
            Refusal::DockerSocket,
            Refusal::Device,
            Refusal::SecurityOpt,
            Refusal::OomKillDisable,
            Refusal::Image,
            Refusal::LimitAboveMaximum,
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn glob() {
        assert!(glob_match("*", "anything/at:all"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*b*", "abc"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b", "aXc"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "x"));
        // A hostile pattern stays fast.
        let p = "*a".repeat(50);
        assert!(!glob_match(&p, &"a".repeat(40)));
    }
}
