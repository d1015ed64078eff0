//! `mesh profile`: writes ServiceProfiles (`--template`, `--open-api`) and checks them
//! (`validate`), offline.
//!
//! Every check is the controller's own ([`mesh_core::profile`]): a profile this
//! command accepts is one the destination service and the admission webhook accept too,
//! and everything it generates is validated by those checks before it is printed, so a
//! generated profile can always be applied as it is.
//!
//! ```text
//! mesh profile --template web -n emojivoto > web-profile.yaml
//! mesh profile --open-api books.yaml books -n shop | kubectl apply -f -
//! mesh profile validate web-profile.yaml
//! ```

mod openapi;
pub(crate) mod validate;

use crate::UsageError;
use anyhow::Context as _;
use clap::Subcommand;
use mesh_api::names::{is_dns_domain, is_dns_label};
use std::{
    fmt,
    io::Read as _,
    path::{Path, PathBuf},
};

/// Generate a ServiceProfile for a service (`--template`, `--open-api FILE`) or check
/// profiles (`validate FILE`).
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProfileArgs {
    #[command(subcommand)]
    command: Option<ProfileCommand>,

    /// Print an annotated example profile for SERVICE, to edit.
    #[arg(long, conflicts_with = "open_api")]
    template: bool,

    /// Print a profile for SERVICE with one route per operation of this OpenAPI 2
    /// (Swagger) or 3 spec, JSON or YAML (`-` reads stdin).
    #[arg(long, value_name = "FILE")]
    open_api: Option<PathBuf>,

    /// The service the profile describes (its name, without the namespace).
    #[arg(value_name = "SERVICE")]
    service: Option<String>,

    /// The service's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,

    /// The cluster's DNS domain: the profile is named
    /// `<SERVICE>.<NAMESPACE>.svc.<CLUSTER_DOMAIN>`.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
}

#[derive(Debug, Subcommand)]
enum ProfileCommand {
    /// Check every ServiceProfile in FILE (`-` reads stdin; several documents may be
    /// separated by `---`); exits 1 if any is invalid, naming each problem's field.
    Validate(ValidateArgs),
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// Files of ServiceProfiles; `-` reads stdin.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,

    /// The cluster's DNS domain: every profile must be named
    /// `<service>.<namespace>.svc.<CLUSTER_DOMAIN>`.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
}

/// What `mesh profile` was asked to do, with every flag checked.
#[derive(Debug)]
pub enum Config {
    Validate {
        inputs: Vec<Input>,
        cluster_domain: String,
    },
    Template(Service),
    OpenApi {
        spec: Input,
        service: Service,
    },
}

/// The service a generated profile is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    name: String,
    namespace: String,
    cluster_domain: String,
}

/// A file, or stdin for `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

/// Runs a checked `mesh profile` command, printing to stdout.
pub fn run(config: Config) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match config {
        Config::Validate {
            inputs,
            cluster_domain,
        } => validate::run(&inputs, &cluster_domain, &mut out),
        Config::Template(service) => {
            use std::io::Write as _;
            out.write_all(service.template().as_bytes())
                .context("writing the profile")
        }
        Config::OpenApi { spec, service } => openapi::run(&spec, &service, &mut out),
    }
}

// === impl Config ===

impl TryFrom<ProfileArgs> for Config {
    type Error = UsageError;

    fn try_from(args: ProfileArgs) -> Result<Self, UsageError> {
        if let Some(ProfileCommand::Validate(v)) = args.command {
            check_cluster_domain(&v.cluster_domain)?;
            return Ok(Self::Validate {
                inputs: v.files.into_iter().map(Input::from).collect(),
                cluster_domain: v.cluster_domain,
            });
        }
        let mode = match (args.template, &args.open_api) {
            (true, _) => "--template",
            (false, Some(_)) => "--open-api FILE",
            (false, None) => {
                return Err(UsageError::new(
                    "say what to do: `mesh profile --template SERVICE`, \
                     `mesh profile --open-api FILE SERVICE` or `mesh profile validate FILE`",
                ))
            }
        };
        let Some(name) = args.service else {
            return Err(UsageError::new(format!(
                "{mode} needs the service's name: `mesh profile {mode} SERVICE [-n NAMESPACE]`"
            )));
        };
        check_label("SERVICE", &name)?;
        check_label("--namespace", &args.namespace)?;
        check_cluster_domain(&args.cluster_domain)?;
        let service = Service {
            name,
            namespace: args.namespace,
            cluster_domain: args.cluster_domain,
        };
        Ok(match args.open_api {
            Some(path) if !args.template => Self::OpenApi {
                spec: Input::from(path),
                service,
            },
            _ => Self::Template(service),
        })
    }
}

/// Service and namespace names are DNS-1123 labels; the profile's name is made of them.
fn check_label(what: &str, label: &str) -> Result<(), UsageError> {
    if is_dns_label(label) {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "{what} {label:?} is not a DNS-1123 label (lowercase letters, digits and '-', \
             at most 63, starting and ending with a letter or digit)"
        )))
    }
}

fn check_cluster_domain(domain: &str) -> Result<(), UsageError> {
    if is_dns_domain(domain) {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "--cluster-domain {domain:?} is not a DNS name"
        )))
    }
}

// === impl Service ===

impl Service {
    /// The profile's name: `<service>.<namespace>.svc.<cluster-domain>`.
    fn fqdn(&self) -> String {
        mesh_core::profile::template::service_fqdn(
            &self.name,
            &self.namespace,
            &self.cluster_domain,
        )
    }

    /// The annotated example profile (`--template`), written by `mesh-core`, which the
    /// controller serves the dashboard too.
    fn template(&self) -> String {
        mesh_core::profile::template::template(&self.name, &self.namespace, &self.cluster_domain)
    }
}

// === impl Input ===

impl From<PathBuf> for Input {
    fn from(path: PathBuf) -> Self {
        if path == Path::new("-") {
            Self::Stdin
        } else {
            Self::File(path)
        }
    }
}

impl Input {
    pub(crate) fn read(&self) -> anyhow::Result<String> {
        match self {
            Self::Stdin => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading stdin")?;
                Ok(text)
            }
            Self::File(path) => {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            }
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdin => f.write_str("<stdin>"),
            Self::File(path) => path.display().fmt(f),
        }
    }
}
