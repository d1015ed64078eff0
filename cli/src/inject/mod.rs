//! `mesh inject FILE|-` and `mesh uninject FILE|-`: manifests in, the same manifests
//! out with their pods meshed (or unmeshed), offline.
//!
//! By default `mesh inject` only asks for injection: it adds `mesh.rs/inject: enabled`
//! (and a `config.mesh.rs/*` annotation per proxy flag given) to every pod template
//! (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob's job template),
//! every Pod and every Namespace; the cluster's injector does the rest at admission.
//! `--manual` adds the proxy itself, with the injector's own code
//! (`mesh_core::inject`), for clusters without the webhook: the install's values
//! (`--values`, a `mesh-config` `values.yaml`; else the defaults, as `mesh install`
//! with no `--set`) and its trust anchors (`--identity-trust-anchors-file`, required:
//! anchors that are not the cluster's would give a proxy that never gets a
//! certificate). The namespace a document names, else `--namespace`, goes into
//! `mesh.rs/workload-ns`.
//!
//! `mesh uninject` removes both: the annotations, and everything injection adds.
//!
//! Documents keep their order, `List`s their items' order, mappings their keys'
//! order ([`node`]); what is not a workload passes through untouched. A report line
//! per workload goes to stderr, as Linkerd's (`deployment "web" injected`).

pub mod node;

use anyhow::{bail, Context as _};
use clap::Args;
use mesh_core::{
    inject::{self, pod as parts, settings, Decision, Input, Namespace, Owner},
    install::{meta, Values, VERSION},
};
use node::Node;
use std::{collections::BTreeMap, io::Write, path::PathBuf};

/// `mesh inject`'s flags.
#[derive(Clone, Debug, Args)]
pub struct InjectArgs {
    /// The manifests (YAML, several documents allowed), or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub input: PathBuf,
    /// Add the proxy itself instead of asking the cluster's injector to.
    #[arg(long)]
    pub manual: bool,
    /// With --manual: the install's values (`kubectl -n mesh-system get cm mesh-config
    /// -o jsonpath='{.data.values\.yaml}'`); default: `mesh install`'s defaults.
    #[arg(long, value_name = "FILE", requires = "manual")]
    pub values: Option<PathBuf>,
    /// With --manual: the install's trust anchors, PEM (`kubectl -n mesh-system get cm
    /// mesh-identity-trust-roots -o jsonpath='{.data.ca-bundle\.crt}'`).
    #[arg(long, value_name = "FILE", requires = "manual")]
    pub identity_trust_anchors_file: Option<PathBuf>,
    /// With --manual: the namespace of documents that name none.
    #[arg(long, short = 'n', default_value = "default", value_name = "NS")]
    pub namespace: String,
    #[command(flatten)]
    pub proxy: ProxyFlags,
}

/// The proxy settings, each written as its `config.mesh.rs/<name>` annotation.
#[derive(Clone, Debug, Default, Args)]
pub struct ProxyFlags {
    /// The proxy image, without its tag.
    #[arg(long, value_name = "IMAGE")]
    pub proxy_image: Option<String>,
    /// The proxy image's tag.
    #[arg(long, value_name = "TAG")]
    pub proxy_version: Option<String>,
    /// The proxy's log filter (`warn,mesh_proxy=debug`).
    #[arg(long, value_name = "FILTER")]
    pub proxy_log_level: Option<String>,
    #[arg(long, value_name = "QUANTITY")]
    pub proxy_cpu_request: Option<String>,
    #[arg(long, value_name = "QUANTITY")]
    pub proxy_cpu_limit: Option<String>,
    #[arg(long, value_name = "QUANTITY")]
    pub proxy_memory_request: Option<String>,
    #[arg(long, value_name = "QUANTITY")]
    pub proxy_memory_limit: Option<String>,
    /// Inbound ports not redirected to the proxy (`22,8000-8010`).
    #[arg(long, value_name = "PORTS")]
    pub skip_inbound_ports: Option<String>,
    /// Outbound ports not redirected to the proxy.
    #[arg(long, value_name = "PORTS")]
    pub skip_outbound_ports: Option<String>,
    /// Ports whose traffic is opaque TCP.
    #[arg(long, value_name = "PORTS")]
    pub opaque_ports: Option<String>,
    /// `false`: the proxy as the first container instead of a native sidecar.
    #[arg(long, value_name = "BOOL")]
    pub proxy_native_sidecar: Option<bool>,
    /// The inbound policy of ports no `Server` selects: `all-unauthenticated`,
    /// `all-authenticated`, `cluster-authenticated`, `cluster-unauthenticated`, `deny`
    /// or `audit`.
    #[arg(long, value_name = "POLICY")]
    pub default_inbound_policy: Option<String>,
}

/// `mesh uninject`'s flags.
#[derive(Clone, Debug, Args)]
pub struct UninjectArgs {
    /// The manifests (YAML, several documents allowed), or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub input: PathBuf,
}

/// What to do to each workload.
enum Mode {
    Annotate(Vec<(String, String)>),
    Manual {
        annotations: Vec<(String, String)>,
        values: Box<Values>,
        anchors: String,
        namespace: String,
    },
    Uninject,
}

impl ProxyFlags {
    /// The annotations, each checked as the injector will check it.
    fn annotations(&self) -> anyhow::Result<Vec<(String, String)>> {
        let given = [
            (settings::PROXY_IMAGE, &self.proxy_image),
            (settings::PROXY_VERSION, &self.proxy_version),
            (settings::PROXY_LOG_LEVEL, &self.proxy_log_level),
            (settings::PROXY_CPU_REQUEST, &self.proxy_cpu_request),
            (settings::PROXY_CPU_LIMIT, &self.proxy_cpu_limit),
            (settings::PROXY_MEMORY_REQUEST, &self.proxy_memory_request),
            (settings::PROXY_MEMORY_LIMIT, &self.proxy_memory_limit),
            (settings::SKIP_INBOUND_PORTS, &self.skip_inbound_ports),
            (settings::SKIP_OUTBOUND_PORTS, &self.skip_outbound_ports),
            (settings::OPAQUE_PORTS, &self.opaque_ports),
            (
                settings::PROXY_NATIVE_SIDECAR,
                &self.proxy_native_sidecar.map(|b| b.to_string()),
            ),
            (
                settings::DEFAULT_INBOUND_POLICY,
                &self.default_inbound_policy,
            ),
        ];
        let mut out = Vec::new();
        for (name, value) in given {
            let Some(value) = value else { continue };
            let key = format!("{}{name}", meta::CONFIG_PREFIX);
            let one = BTreeMap::from([(key.clone(), value.clone())]);
            if let Err(e) = settings::Settings::resolve(&Values::default(), &BTreeMap::new(), &one)
            {
                let expected = e.rsplit_once(": ").map_or(e.as_str(), |(_, x)| x);
                return Err(
                    crate::UsageError::new(format!("--{name} {value:?}: {expected}")).into(),
                );
            }
            out.push((key, value.clone()));
        }
        Ok(out)
    }
}

/// `mesh inject`.
pub fn inject(
    args: InjectArgs,
    out: &mut impl Write,
    report: &mut impl Write,
) -> anyhow::Result<()> {
    let annotations = args.proxy.annotations()?;
    let mode = if args.manual {
        let values = match &args.values {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --values {}", path.display()))?;
                let values = Values::from_yaml(&text)
                    .map_err(|e| anyhow::anyhow!("--values {}: {e}", path.display()))?;
                settings::check_values(&values)
                    .map_err(|e| anyhow::anyhow!("--values {}: {e}", path.display()))?;
                values
            }
            None => Values::default(),
        };
        let Some(path) = &args.identity_trust_anchors_file else {
            return Err(crate::UsageError::new(
                "--manual needs --identity-trust-anchors-file FILE, the install's trust anchors \
                 (kubectl -n mesh-system get configmap mesh-identity-trust-roots -o jsonpath='{.data.ca-bundle\\.crt}')"
                    .to_string(),
            )
            .into());
        };
        let anchors = std::fs::read_to_string(path)
            .with_context(|| format!("reading --identity-trust-anchors-file {}", path.display()))?;
        if !anchors.contains("-----BEGIN CERTIFICATE-----") {
            bail!(
                "--identity-trust-anchors-file {}: no PEM CERTIFICATE block",
                path.display()
            );
        }
        Mode::Manual {
            annotations,
            values: Box::new(values),
            anchors,
            namespace: args.namespace,
        }
    } else {
        Mode::Annotate(annotations)
    };
    transform(&args.input, &mode, out, report)
}

/// `mesh uninject`.
pub fn uninject(
    args: UninjectArgs,
    out: &mut impl Write,
    report: &mut impl Write,
) -> anyhow::Result<()> {
    transform(&args.input, &Mode::Uninject, out, report)
}

fn transform(
    input: &std::path::Path,
    mode: &Mode,
    out: &mut impl Write,
    report: &mut impl Write,
) -> anyhow::Result<()> {
    let source = crate::profile::Input::from(input.to_path_buf());
    let text = source.read()?;
    let docs = crate::profile::validate::documents(&text);
    let mut rendered = Vec::with_capacity(docs.len());
    for (i, doc) in docs.iter().enumerate() {
        let line = doc
            .lines()
            .position(|l| {
                let l = l.trim();
                !l.is_empty() && !l.starts_with('#')
            })
            .map_or(1, |i| i + 1);
        let at = format!("{source}: document {} (line {line})", i + 1);
        let mut node: Node =
            mesh_core::yaml::from_str(doc).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
        let mut lines = Vec::new();
        object(&mut node, mode, &mut lines).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
        for l in lines {
            writeln!(report, "{l}")?;
        }
        rendered.push(mesh_core::yaml::to_string(&node).with_context(|| format!("{at}: writing"))?);
    }
    for (i, doc) in rendered.iter().enumerate() {
        if i > 0 {
            out.write_all(b"---\n")?;
        }
        out.write_all(doc.as_bytes())?;
        if !doc.ends_with('\n') {
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Where a kind keeps its pod template's `metadata` and `spec`.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        "Pod" | "Namespace" => &[],
        _ => return None,
    })
}

/// One object (a document, or a `List`'s item).
fn object(node: &mut Node, mode: &Mode, report: &mut Vec<String>) -> Result<(), String> {
    if !matches!(node, Node::Map(_)) {
        return Err("not a Kubernetes object (a YAML mapping)".into());
    }
    let kind = node
        .get("kind")
        .and_then(Node::as_str)
        .filter(|k| !k.is_empty())
        .ok_or("no kind")?
        .to_string();
    if kind == "List" || kind.ends_with("List") {
        if let Some(Node::Seq(items)) = node.get_mut("items") {
            for (i, item) in items.iter_mut().enumerate() {
                object(item, mode, report).map_err(|e| format!("items[{i}]: {e}"))?;
            }
        }
        return Ok(());
    }
    let name = node
        .at(&["metadata", "name"])
        .or_else(|| node.at(&["metadata", "generateName"]))
        .and_then(Node::as_str)
        .unwrap_or("")
        .to_string();
    let namespace = node
        .at(&["metadata", "namespace"])
        .and_then(Node::as_str)
        .map(String::from);
    let Some(path) = template_path(&kind) else {
        return Ok(());
    };
    let what = format!("{} {name:?}", kind.to_ascii_lowercase());
    let template = node
        .map_at(path)
        .ok_or_else(|| format!("{}: not a mapping", path.join(".")))?;
    match mode {
        Mode::Annotate(config) => {
            annotate(template, config)?;
            report.push(format!("{what} injected"));
        }
        Mode::Manual {
            annotations,
            values,
            anchors,
            namespace: default_ns,
        } => {
            annotate(template, annotations)?;
            if kind == "Namespace" {
                report.push(format!("{what} injected"));
                return Ok(());
            }
            let owner = (kind != "Pod").then(|| Owner {
                kind: kind.clone(),
                name: name.clone(),
            });
            let ns = Namespace {
                name: namespace.unwrap_or_else(|| default_ns.clone()),
                ..Namespace::default()
            };
            let created_by = format!("mesh/cli {VERSION}");
            let pod = template.to_json();
            let decision = inject::decide(Input {
                pod: &pod,
                namespace: &ns,
                owner: owner.as_ref(),
                values,
                trust_anchors: anchors,
                created_by: &created_by,
            });
            match decision {
                Decision::Inject(patch) => {
                    for op in &patch.0 {
                        template.add(&op.path, Node::from_json(&op.value))?;
                    }
                    report.push(format!("{what} injected"));
                }
                Decision::Skip { reason, .. } => report.push(format!("{what} skipped: {reason}")),
                Decision::NotAsked => report.push(format!("{what} skipped")),
            }
        }
        Mode::Uninject => {
            if uninject_pod(template) {
                report.push(format!("{what} uninjected"));
            }
        }
    }
    Ok(())
}

/// Adds `mesh.rs/inject: enabled` and `config` to the template's annotations.
fn annotate(template: &mut Node, config: &[(String, String)]) -> Result<(), String> {
    let annotations = template
        .map_at(&["metadata", "annotations"])
        .ok_or("metadata.annotations: not a mapping")?;
    annotations.set(meta::INJECT, Node::Str(meta::INJECT_ENABLED.into()));
    for (k, v) in config {
        annotations.set(k, Node::Str(v.clone()));
    }
    Ok(())
}

/// Removes what `mesh inject` (with or without `--manual`) and the injector add;
/// a map or list left empty by a removal goes too. `config.mesh.rs/*` annotations
/// stay: they are settings an operator may have written, harmless without a proxy,
/// and keeping them makes `uninject` undo `inject` exactly when no proxy flag was
/// given. Whether anything was removed.
fn uninject_pod(template: &mut Node) -> bool {
    let mut changed = false;
    let annotation = |k: &str| {
        k == meta::INJECT
            || [
                meta::TRUST_ROOT_SHA256,
                meta::PROXY_VERSION,
                meta::CREATED_BY,
                meta::INJECT_SKIPPED,
            ]
            .contains(&k)
    };
    let label = |k: &str| {
        k == meta::CONTROL_PLANE_NS
            || k == meta::WORKLOAD_NS
            || k.starts_with(meta::PROXY_OWNER_PREFIX)
    };
    changed |= retain(template, &["metadata", "annotations"], |e| match e {
        Entry::Key(k) => !annotation(k),
        Entry::Item(_) => true,
    });
    changed |= retain(template, &["metadata", "labels"], |e| match e {
        Entry::Key(k) => !label(k),
        Entry::Item(_) => true,
    });
    let named = |names: &'static [&'static str]| {
        move |e: Entry<'_>| match e {
            Entry::Item(n) => !n
                .get("name")
                .and_then(Node::as_str)
                .is_some_and(|x| names.contains(&x)),
            Entry::Key(_) => true,
        }
    };
    changed |= retain(
        template,
        &["spec", "initContainers"],
        named(&[meta::INIT_CONTAINER, meta::PROXY_CONTAINER]),
    );
    changed |= retain(
        template,
        &["spec", "containers"],
        named(&[meta::PROXY_CONTAINER]),
    );
    changed |= retain(
        template,
        &["spec", "volumes"],
        named(&[parts::TOKEN_VOLUME, parts::INIT_RUN_VOLUME]),
    );
    changed
}

enum Entry<'a> {
    Key(&'a str),
    Item(&'a Node),
}

/// Keeps the entries of the map or list at `path` that `keep` says to; removes the
/// map or list itself when that emptied it (not `spec.containers`, which must stay).
fn retain(template: &mut Node, path: &[&str], keep: impl Fn(Entry<'_>) -> bool) -> bool {
    let Some(node) = template.at_mut(path) else {
        return false;
    };
    let (before, after) = match node {
        Node::Map(entries) => {
            let before = entries.len();
            entries.retain(|(k, _)| keep(Entry::Key(k)));
            (before, entries.len())
        }
        Node::Seq(items) => {
            let before = items.len();
            items.retain(|n| keep(Entry::Item(n)));
            (before, items.len())
        }
        _ => return false,
    };
    if after < before && after == 0 && path != ["spec", "containers"] {
        // Up the path, each map left empty goes (a template's `metadata` made for
        // the annotation alone).
        for depth in (1..=path.len()).rev() {
            let (last, parent) = (path[depth - 1], &path[..depth - 1]);
            let empty = match template.at(&path[..depth]) {
                Some(Node::Map(e)) => e.is_empty(),
                Some(Node::Seq(e)) => e.is_empty(),
                _ => false,
            };
            if !empty {
                break;
            }
            if let Some(parent) = template.at_mut(parent) {
                parent.remove(last);
            }
        }
    }
    after < before
}

#[cfg(test)]
mod tests;
