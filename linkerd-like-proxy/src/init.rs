//! `mesh-proxy init`: installs the iptables rules that send a pod's TCP through its
//! proxy, as the init container does before the application starts.
//!
//! Inbound TCP (PREROUTING) goes to the inbound listener, except the proxy's own
//! admin and tap ports and any skipped ports. Outbound TCP (OUTPUT) goes to the
//! outbound listener, except traffic from the proxy's own user (so its connections
//! are not redirected back to itself), loopback traffic and skipped ports.

use std::{collections::BTreeSet, fmt, process::Command};

pub const INBOUND_CHAIN: &str = "MESH_PROXY_INBOUND";
pub const OUTPUT_CHAIN: &str = "MESH_PROXY_OUTPUT";

/// Options of `mesh-proxy init`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitConfig {
    pub proxy_uid: u32,
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub skip_inbound_ports: BTreeSet<u16>,
    pub skip_outbound_ports: BTreeSet<u16>,
    pub dry_run: bool,
    pub iptables: String,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            proxy_uid: 2102,
            inbound_port: 4143,
            outbound_port: 4140,
            skip_inbound_ports: BTreeSet::new(),
            skip_outbound_ports: BTreeSet::new(),
            dry_run: false,
            iptables: "iptables".into(),
        }
    }
}

/// A flag `mesh-proxy init` could not use.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub const USAGE: &str =
    "usage: mesh-proxy init [--proxy-uid UID] [--inbound-port PORT] [--outbound-port PORT] \
[--skip-inbound-ports LIST] [--skip-outbound-ports LIST] [--iptables BIN] [--dry-run]";

impl InitConfig {
    pub fn parse(args: &[String]) -> Result<Self, UsageError> {
        let mut c = Self::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag.as_str(), None),
            };
            if name == "--dry-run" {
                c.dry_run = true;
                continue;
            }
            const VALUED: &[&str] = &[
                "--proxy-uid",
                "--inbound-port",
                "--outbound-port",
                "--skip-inbound-ports",
                "--skip-outbound-ports",
                "--iptables",
            ];
            if !VALUED.contains(&name) {
                return Err(UsageError(format!("unknown flag {name}\n{USAGE}")));
            }
            let value = match inline.or_else(|| it.next().cloned()) {
                Some(v) => v,
                None => return Err(UsageError(format!("{name} needs a value\n{USAGE}"))),
            };
            let bad = |what: &str| UsageError(format!("{name} {value:?}: expected {what}"));
            match name {
                "--proxy-uid" => {
                    c.proxy_uid = value.parse().map_err(|_| bad("a numeric user id"))?
                }
                "--inbound-port" => {
                    c.inbound_port = port(&value).ok_or_else(|| bad("a port from 1 to 65535"))?
                }
                "--outbound-port" => {
                    c.outbound_port = port(&value).ok_or_else(|| bad("a port from 1 to 65535"))?
                }
                "--skip-inbound-ports" => {
                    c.skip_inbound_ports =
                        ports(&value).ok_or_else(|| bad("ports like 22,8000-8010"))?
                }
                "--skip-outbound-ports" => {
                    c.skip_outbound_ports =
                        ports(&value).ok_or_else(|| bad("ports like 22,8000-8010"))?
                }
                "--iptables" => c.iptables = value,
                _ => return Err(UsageError(format!("unknown flag {name}\n{USAGE}"))),
            }
        }
        Ok(c)
    }

    /// The iptables invocations, in order (without the binary name).
    pub fn rules(&self) -> Vec<Vec<String>> {
        let mut skip_in: BTreeSet<u16> = [4190, 4191].into_iter().collect();
        skip_in.extend(&self.skip_inbound_ports);
        let mut r: Vec<Vec<String>> = Vec::new();
        let mut add = |s: String| r.push(s.split_whitespace().map(String::from).collect());
        add(format!("-t nat -N {INBOUND_CHAIN}"));
        for p in port_specs(&skip_in) {
            add(format!(
                "-t nat -A {INBOUND_CHAIN} -p tcp --dport {p} -j RETURN"
            ));
        }
        add(format!(
            "-t nat -A {INBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {}",
            self.inbound_port
        ));
        add(format!("-t nat -A PREROUTING -j {INBOUND_CHAIN}"));
        add(format!("-t nat -N {OUTPUT_CHAIN}"));
        add(format!(
            "-t nat -A {OUTPUT_CHAIN} -m owner --uid-owner {} -j RETURN",
            self.proxy_uid
        ));
        add(format!("-t nat -A {OUTPUT_CHAIN} -o lo -j RETURN"));
        for p in port_specs(&self.skip_outbound_ports) {
            add(format!(
                "-t nat -A {OUTPUT_CHAIN} -p tcp --dport {p} -j RETURN"
            ));
        }
        add(format!(
            "-t nat -A {OUTPUT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        ));
        add(format!("-t nat -A OUTPUT -j {OUTPUT_CHAIN}"));
        r
    }

    /// Applies (or with `--dry-run` prints) the rules.
    pub fn run(&self, out: &mut impl std::io::Write) -> Result<(), String> {
        for rule in self.rules() {
            let line = format!("{} {}", self.iptables, rule.join(" "));
            let _ = writeln!(out, "{line}");
            if self.dry_run {
                continue;
            }
            let status = Command::new(&self.iptables)
                .args(&rule)
                .status()
                .map_err(|e| format!("could not run {}: {e}", self.iptables))?;
            if !status.success() {
                return Err(format!("`{line}` failed with {status}"));
            }
        }
        Ok(())
    }
}

fn port(s: &str) -> Option<u16> {
    s.trim().parse().ok().filter(|p| *p != 0)
}

fn ports(s: &str) -> Option<BTreeSet<u16>> {
    let mut set = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    return None;
                }
                set.extend(a..=b);
            }
            None => {
                set.insert(port(part)?);
            }
        }
    }
    Some(set)
}

/// Ports as iptables `--dport` arguments, ranges collapsed to `a:b`.
fn port_specs(ports: &BTreeSet<u16>) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = ports.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end.wrapping_add(1))) && end < u16::MAX {
            end = it.next().expect("peeked");
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn default_rules() {
        let c = InitConfig::parse(&[]).unwrap();
        let rules: Vec<String> = c.rules().iter().map(|r| r.join(" ")).collect();
        assert_eq!(
            rules,
            vec![
                "-t nat -N MESH_PROXY_INBOUND",
                "-t nat -A MESH_PROXY_INBOUND -p tcp --dport 4190:4191 -j RETURN",
                "-t nat -A MESH_PROXY_INBOUND -p tcp -j REDIRECT --to-ports 4143",
                "-t nat -A PREROUTING -j MESH_PROXY_INBOUND",
                "-t nat -N MESH_PROXY_OUTPUT",
                "-t nat -A MESH_PROXY_OUTPUT -m owner --uid-owner 2102 -j RETURN",
                "-t nat -A MESH_PROXY_OUTPUT -o lo -j RETURN",
                "-t nat -A MESH_PROXY_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
                "-t nat -A OUTPUT -j MESH_PROXY_OUTPUT",
            ]
        );
    }

    #[test]
    fn flags() {
        let c = InitConfig::parse(&args(
            "--proxy-uid 1000 --skip-outbound-ports 22,8000-8002 --inbound-port=5000 --dry-run",
        ))
        .unwrap();
        assert_eq!(c.proxy_uid, 1000);
        assert_eq!(c.inbound_port, 5000);
        assert!(c.dry_run);
        let rules: Vec<String> = c.rules().iter().map(|r| r.join(" ")).collect();
        assert!(
            rules.contains(&"-t nat -A MESH_PROXY_OUTPUT -p tcp --dport 22 -j RETURN".to_string())
        );
        assert!(rules.contains(
            &"-t nat -A MESH_PROXY_OUTPUT -p tcp --dport 8000:8002 -j RETURN".to_string()
        ));
    }

    #[test]
    fn bad_flags_say_what_was_wrong() {
        assert!(InitConfig::parse(&args("--proxy-uid x"))
            .unwrap_err()
            .0
            .contains("--proxy-uid \"x\": expected"));
        assert!(InitConfig::parse(&args("--inbound-port 0")).is_err());
        assert!(InitConfig::parse(&args("--skip-inbound-ports 9-1")).is_err());
        assert!(InitConfig::parse(&args("--frobnicate"))
            .unwrap_err()
            .0
            .contains("unknown flag"));
        assert!(InitConfig::parse(&args("--outbound-port"))
            .unwrap_err()
            .0
            .contains("needs a value"));
    }
}
