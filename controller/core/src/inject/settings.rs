//! The proxy settings a pod or its namespace may override with `config.mesh.rs/*`
//! annotations, and their checks. A value the proxy or the kubelet would refuse is
//! refused here, so that a typo costs a pod its proxy (with the reason recorded on
//! it) instead of leaving a pod that never starts.
//!
//! | annotation | what | default (`mesh-config`) |
//! |---|---|---|
//! | `config.mesh.rs/proxy-image` | the proxy image without its tag | `<registry>/<proxy.image>` |
//! | `config.mesh.rs/proxy-version` | the proxy image's tag | `imageTag` |
//! | `config.mesh.rs/proxy-log-level` | `MESH_PROXY_LOG` (`warn,mesh_proxy=debug`) | `proxy.logLevel` |
//! | `config.mesh.rs/proxy-cpu-request`, `-cpu-limit`, `-memory-request`, `-memory-limit` | the proxy's resources (quantities) | `proxy.resources` |
//! | `config.mesh.rs/skip-inbound-ports`, `skip-outbound-ports` | ports `mesh-proxy init` leaves alone (`22,8000-8010`) | `proxy.skip*Ports` |
//! | `config.mesh.rs/opaque-ports` | `MESH_PROXY_OPAQUE_PORTS` | `proxy.opaquePorts` |
//! | `config.mesh.rs/proxy-native-sidecar` | `true`: an init container with `restartPolicy: Always`; `false`: the first container | `proxy.nativeSidecar` |
//! | `config.mesh.rs/default-inbound-policy` | `MESH_PROXY_INBOUND_DEFAULT_POLICY`, the policy of ports no `Server` selects (`all-unauthenticated`, `all-authenticated`, `cluster-authenticated`, `cluster-unauthenticated`, `deny`, `audit`) | `proxy.defaultInboundPolicy` |
//!
//! The pod's annotation wins over its namespace's. Any other `config.mesh.rs/` key is
//! refused as unknown (a misspelt setting would otherwise be silently ignored), but
//! for `config.mesh.rs/admission-webhooks`, which is the namespace's and not the
//! proxy's.

use crate::install::{meta, Resources, Values};
use std::collections::BTreeMap;

/// Every setting, as the annotation (after `config.mesh.rs/`) names it.
pub const PROXY_IMAGE: &str = "proxy-image";
pub const PROXY_VERSION: &str = "proxy-version";
pub const PROXY_LOG_LEVEL: &str = "proxy-log-level";
pub const PROXY_CPU_REQUEST: &str = "proxy-cpu-request";
pub const PROXY_CPU_LIMIT: &str = "proxy-cpu-limit";
pub const PROXY_MEMORY_REQUEST: &str = "proxy-memory-request";
pub const PROXY_MEMORY_LIMIT: &str = "proxy-memory-limit";
pub const SKIP_INBOUND_PORTS: &str = "skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS: &str = "skip-outbound-ports";
pub const OPAQUE_PORTS: &str = "opaque-ports";
pub const PROXY_NATIVE_SIDECAR: &str = "proxy-native-sidecar";
pub const DEFAULT_INBOUND_POLICY: &str = "default-inbound-policy";

/// Every setting this injector knows, for `mesh inject`'s flags and the checks.
pub const ALL: &[&str] = &[
    PROXY_IMAGE,
    PROXY_VERSION,
    PROXY_LOG_LEVEL,
    PROXY_CPU_REQUEST,
    PROXY_CPU_LIMIT,
    PROXY_MEMORY_REQUEST,
    PROXY_MEMORY_LIMIT,
    SKIP_INBOUND_PORTS,
    SKIP_OUTBOUND_PORTS,
    OPAQUE_PORTS,
    PROXY_NATIVE_SIDECAR,
    DEFAULT_INBOUND_POLICY,
];

/// The proxy one pod gets: the install's values with the annotations applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The image without its tag.
    pub image: String,
    /// The tag, which is also the `mesh.rs/proxy-version` annotation.
    pub version: String,
    pub log_level: String,
    pub resources: Resources,
    pub uid: u32,
    pub skip_inbound_ports: String,
    pub skip_outbound_ports: String,
    pub opaque_ports: String,
    pub native_sidecar: bool,
    pub default_inbound_policy: String,
}

impl Settings {
    /// The values' defaults overridden by the namespace's annotations, then the pod's.
    /// An error names the annotation, where it was and what it expects.
    pub fn resolve(
        values: &Values,
        namespace: &BTreeMap<String, String>,
        pod: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let mut s = Self {
            image: format!("{}/{}", values.registry, values.proxy.image),
            version: values.image_tag.clone(),
            log_level: values.proxy.log_level.clone(),
            resources: values.proxy.resources.clone(),
            uid: values.proxy.uid,
            skip_inbound_ports: values.proxy.skip_inbound_ports.clone(),
            skip_outbound_ports: values.proxy.skip_outbound_ports.clone(),
            opaque_ports: values.proxy.opaque_ports.clone(),
            native_sidecar: values.proxy.native_sidecar,
            default_inbound_policy: values.proxy.default_inbound_policy.clone(),
        };
        for (source, annotations) in [("namespace", namespace), ("pod", pod)] {
            for (key, value) in annotations {
                let Some(name) = key.strip_prefix(meta::CONFIG_PREFIX) else {
                    continue;
                };
                if key == meta::ADMISSION_WEBHOOKS {
                    continue;
                }
                s.set(name, value.trim()).map_err(|expected| {
                    format!("{source} annotation {key}={value:?}: {expected}")
                })?;
            }
        }
        let r = &s.resources;
        for (what, request, limit) in [
            ("cpu", &r.cpu_request, &r.cpu_limit),
            ("memory", &r.memory_request, &r.memory_limit),
        ] {
            if let (Some(req), Some(lim)) = (quantity_value(request), quantity_value(limit)) {
                if req > lim {
                    return Err(format!(
                        "config.mesh.rs/proxy-{what}-request and -limit (or the install's values): the proxy's {what} request {request} is over its limit {limit}"
                    ));
                }
            }
        }
        Ok(s)
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let port_list = "ports like 22,8000-8010";
        match name {
            PROXY_IMAGE if is_image(value) => self.image = value.into(),
            PROXY_IMAGE => return Err("expected an image name without spaces or tag".into()),
            PROXY_VERSION if is_tag(value) => self.version = value.into(),
            PROXY_VERSION => return Err("expected an image tag (letters, digits, `_`, `.`, `-`; at most 128)".into()),
            PROXY_LOG_LEVEL if is_log_filter(value) => self.log_level = value.into(),
            PROXY_LOG_LEVEL => {
                return Err("expected a log filter such as `warn,mesh_proxy=debug` (levels: off, error, warn, info, debug, trace)".into())
            }
            PROXY_CPU_REQUEST | PROXY_CPU_LIMIT | PROXY_MEMORY_REQUEST | PROXY_MEMORY_LIMIT => {
                if !is_quantity(value) {
                    return Err("expected a Kubernetes quantity such as 100m, 0.5, 64Mi or 1G".into());
                }
                let r = &mut self.resources;
                let field = match name {
                    PROXY_CPU_REQUEST => &mut r.cpu_request,
                    PROXY_CPU_LIMIT => &mut r.cpu_limit,
                    PROXY_MEMORY_REQUEST => &mut r.memory_request,
                    _ => &mut r.memory_limit,
                };
                *field = value.into();
            }
            SKIP_INBOUND_PORTS if is_port_list(value) => self.skip_inbound_ports = value.into(),
            SKIP_OUTBOUND_PORTS if is_port_list(value) => self.skip_outbound_ports = value.into(),
            OPAQUE_PORTS if is_port_list(value) => self.opaque_ports = value.into(),
            SKIP_INBOUND_PORTS | SKIP_OUTBOUND_PORTS | OPAQUE_PORTS => {
                return Err(format!("expected {port_list} (1 to 65535)"))
            }
            PROXY_NATIVE_SIDECAR => {
                self.native_sidecar = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err("expected true or false".into()),
                }
            }
            DEFAULT_INBOUND_POLICY => {
                let policy: mesh_api::policy::DefaultPolicy = value.parse()?;
                self.default_inbound_policy = policy.name().into();
            }
            _ => return Err(format!("unknown setting; known: {}", ALL.join(", "))),
        }
        Ok(())
    }

    /// `<image>:<version>`.
    pub fn image_ref(&self) -> String {
        format!("{}:{}", self.image, self.version)
    }
}

/// Checks the values' own proxy settings as if they were annotations, so that a bad
/// `--set` fails at install (and a bad `mesh-config` at the controller's start)
/// rather than at each pod.
pub fn check_values(values: &Values) -> Result<(), String> {
    let p = &values.proxy;
    let r = &p.resources;
    let mut s = Settings::resolve(values, &BTreeMap::new(), &BTreeMap::new())?;
    for (name, value) in [
        (PROXY_IMAGE, s.image.clone()),
        (PROXY_VERSION, values.image_tag.clone()),
        (PROXY_LOG_LEVEL, p.log_level.clone()),
        (SKIP_INBOUND_PORTS, p.skip_inbound_ports.clone()),
        (SKIP_OUTBOUND_PORTS, p.skip_outbound_ports.clone()),
        (OPAQUE_PORTS, p.opaque_ports.clone()),
        (DEFAULT_INBOUND_POLICY, p.default_inbound_policy.clone()),
        (PROXY_CPU_REQUEST, r.cpu_request.clone()),
        (PROXY_CPU_LIMIT, r.cpu_limit.clone()),
        (PROXY_MEMORY_REQUEST, r.memory_request.clone()),
        (PROXY_MEMORY_LIMIT, r.memory_limit.clone()),
    ] {
        let optional = !matches!(
            name,
            PROXY_IMAGE | PROXY_VERSION | PROXY_LOG_LEVEL | DEFAULT_INBOUND_POLICY
        );
        if optional && value.is_empty() {
            continue;
        }
        s.set(name, &value)
            .map_err(|expected| format!("proxy setting {name}={value:?}: {expected}"))?;
    }
    Ok(())
}

fn is_image(s: &str) -> bool {
    !s.is_empty() && s.len() <= 512 && s.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
}

fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !s.starts_with(['.', '-'])
}

/// `level` or `target=level`, comma-separated: the part of `EnvFilter`'s syntax a
/// proxy's log needs (span filters are left out rather than half-checked).
fn is_log_filter(s: &str) -> bool {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let level = |l: &str| LEVELS.contains(&l.to_ascii_lowercase().as_str());
    !s.is_empty()
        && s.split(',').all(|d| match d.split_once('=') {
            None => level(d),
            Some((target, l)) => {
                !target.is_empty()
                    && target
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
                    && level(l)
            }
        })
}

/// A Kubernetes quantity ([`crate::quantity::parse`]).
pub fn is_quantity(s: &str) -> bool {
    crate::quantity::parse(s).is_ok()
}

/// A quantity's value, to compare a request with its limit; `None` for an empty or
/// invalid one.
pub fn quantity_value(s: &str) -> Option<f64> {
    crate::quantity::parse(s).ok()
}

/// `22,8000-8010`: ports and ranges from 1 to 65535, as `mesh-proxy init` and the
/// proxy read them.
pub fn is_port_list(s: &str) -> bool {
    let port = |p: &str| p.trim().parse::<u16>().is_ok_and(|p| p > 0);
    !s.trim().is_empty()
        && s.split(',').all(|part| match part.split_once('-') {
            None => port(part),
            Some((a, b)) => {
                port(a) && port(b) && a.trim().parse::<u16>().ok() <= b.trim().parse::<u16>().ok()
            }
        })
}
