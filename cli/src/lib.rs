//! `mesh`, the command-line interface of the mesh service mesh.
//!
//! Every command follows the same two stages: raw clap flags are validated into a ready,
//! side-effect-free `Config` (nothing is bound, spawned or connected), and only then does the
//! command start things. A bad flag therefore always exits with [`EX_USAGE`] before anything
//! has been started, and a command's `run` never has to second-guess its input.

// A CLI's output is its product; diagnostics still go through `tracing` to stderr.
#![allow(clippy::print_stdout)]

mod api;
pub mod authz;
pub mod check;
pub mod dashboard;
pub mod demo;
pub mod diagnostics;
pub mod edges;
pub mod inject;
pub mod install;
pub mod policy;
pub mod profile;
pub mod routes;
pub mod stat;
mod table;
pub mod tap;
pub mod top;
pub mod version;

use clap::{Parser, Subcommand};
use std::{fmt, process::ExitCode};

/// Exit code for bad flags or configuration (`EX_USAGE` from sysexits.h).
pub const EX_USAGE: u8 = 64;

/// mesh: a small, fast service mesh.
#[derive(Debug, Parser)]
#[command(name = "mesh", version)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a demo application on this machine, each workload behind its own mesh-proxy,
    /// with a traffic generator; the controller issues every proxy a certificate and
    /// proxies talk mutual TLS. Stop with Ctrl-C.
    Demo(demo::DemoArgs),
    /// Mesh the workloads in manifests: add `mesh.rs/inject: enabled` to every pod
    /// template, Pod and Namespace (`--manual`: the proxy itself); stderr reports each.
    Inject(inject::InjectArgs),
    /// Unmesh the workloads in manifests: remove what `mesh inject` and the injector
    /// added.
    Uninject(inject::UninjectArgs),
    /// Generate a ServiceProfile for a service (`--template`, `--open-api FILE`), or check
    /// profiles (`validate FILE`).
    Profile(profile::ProfileArgs),
    /// Authorization policy: check documents (`policy.mesh.rs`) offline (`validate
    /// FILE`), or dry-run a request against the live policy (`check --from --to`).
    Policy(policy::PolicyArgs),
    /// Every port of a workload with its server, routes and authorizations, and what
    /// each allows (the policy its proxies enforce now).
    Authz(authz::AuthzArgs),
    /// Print the control plane's manifests: `mesh install | kubectl apply -f -`
    /// (`--crds`: the CustomResourceDefinitions alone, to apply first).
    Install(install::InstallArgs),
    /// Print what removes the control plane: `mesh uninstall | kubectl delete -f -`.
    Uninstall(install::UninstallArgs),
    /// Check the mesh in the cluster: its objects, pods, certificates, webhooks and
    /// version (`--pre`: whether the cluster is ready for an install; `--proxy`: the
    /// data plane too), grouped with a hint per failure; exit 1 on any failure.
    Check(check::CheckArgs),
    /// Success rate, request rate, latency and TCP connections per resource, from the
    /// controller's metrics API (`--api-addr`, a cluster's controller through a
    /// port-forward, or the running demo's).
    Stat(stat::StatArgs),
    /// Which resources talk to which, and whether each hop is mutual TLS, with both
    /// identities, from the controller's metrics API.
    Edges(edges::EdgesArgs),
    /// Per-route success rate, request rate and latency of a service's ServiceProfile
    /// routes, from the controller's metrics API.
    Routes(routes::RoutesArgs),
    /// Live requests of a resource's pods, from the controller's tap API (found as the
    /// metrics API is): one line per event, or `-o json`.
    Tap(tap::TapArgs),
    /// A live full-screen table of a resource's requests, from the controller's tap
    /// API: per source, destination, method and path, the count, best, worst and last
    /// latency and the success rate, the busiest first. `q` quits.
    Top(top::TopArgs),
    /// What the destination service answers for an authority: its endpoints with
    /// their identities (`endpoints`), or its ServiceProfile (`profile`); a pod's
    /// proxy's raw metrics (`proxy-metrics po/NAME`).
    Diagnostics(diagnostics::DiagnosticsArgs),
    /// The CLI's version and, when a demo or controller is reachable, the control
    /// plane's.
    Version(version::VersionArgs),
    /// The dashboard's URL: the running demo's controller, or a cluster's through a
    /// port-forward that stays open until Ctrl-C (`--show`: open it in a browser).
    Dashboard(dashboard::DashboardArgs),
}

/// Flags that parsed but do not make sense together or with this machine.
///
/// Kept apart from other errors so that it, and only it, maps to [`EX_USAGE`].
#[derive(Debug)]
pub struct UsageError(String);

// === impl Args ===

impl Args {
    /// Parses the process's arguments, exiting on `--help`, `--version` or a bad flag.
    ///
    /// clap exits with 2 on a usage error; mesh uses [`EX_USAGE`] for every kind of bad
    /// flag, whether clap or our own validation rejects it.
    pub fn parse_or_exit() -> Self {
        match Self::try_parse() {
            Ok(args) => args,
            Err(error) => {
                let code = if error.use_stderr() { EX_USAGE } else { 0 };
                // If even printing the message fails there is nowhere left to report it.
                let _ = error.print();
                std::process::exit(code.into())
            }
        }
    }
}

/// Runs the parsed command to completion and returns the process's exit code.
pub fn run(args: Args) -> ExitCode {
    let result = match args.command {
        Command::Demo(args) => match demo::Config::try_from(args) {
            Ok(config) => block_on(demo::run(config)),
            Err(error) => {
                note(&format!("error: {error}"));
                return ExitCode::from(EX_USAGE);
            }
        },
        Command::Inject(args) => {
            inject::inject(args, &mut std::io::stdout().lock(), &mut std::io::stderr())
        }
        Command::Uninject(args) => {
            inject::uninject(args, &mut std::io::stdout().lock(), &mut std::io::stderr())
        }
        Command::Profile(args) => match profile::Config::try_from(args) {
            Ok(config) => profile::run(config),
            Err(error) => {
                note(&format!("error: {error}"));
                return ExitCode::from(EX_USAGE);
            }
        },
        Command::Policy(args) => policy::run(args),
        Command::Install(args) => match install::Config::try_from(args) {
            Ok(config) => install::run(&config),
            Err(error) => {
                note(&format!("error: {error}"));
                return ExitCode::from(EX_USAGE);
            }
        },
        Command::Uninstall(args) => install::run_uninstall(args),
        Command::Check(args) => {
            return match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(check::run(args)),
                Err(error) => {
                    note(&format!("error: cannot start the runtime: {error}"));
                    ExitCode::FAILURE
                }
            };
        }
        Command::Stat(args) => match stat::Config::try_from(args) {
            Ok(config) => block_on(stat::run(config)),
            Err(error) => {
                note(&format!("error: {error}"));
                return ExitCode::from(EX_USAGE);
            }
        },
        Command::Edges(args) => match edges::Config::try_from(args) {
            Ok(config) => block_on(edges::run(config)),
            Err(error) => {
                note(&format!("error: {error}"));
                return ExitCode::from(EX_USAGE);
            }
        },
        Command::Routes(args) => match routes::Config::try_from(args) {
            Ok(config) => block_on(routes::run(config)),
            Err(error) => {
                note(&format!("error: {error}"));
                return ExitCode::from(EX_USAGE);
            }
        },
        Command::Diagnostics(args) => block_on(diagnostics::run(args)),
        Command::Authz(args) => block_on(authz::run(args)),
        Command::Version(args) => block_on(version::run(args)),
        Command::Dashboard(args) => block_on(dashboard::run(args)),
        Command::Tap(args) => match tap::Config::try_from(args) {
            Ok(config) => block_on(tap::run(config)),
            Err(error) => {
                note(&format!("error: {error}"));
                return ExitCode::from(EX_USAGE);
            }
        },
        Command::Top(args) => match top::Config::try_from(args) {
            Ok(config) => block_on(top::run(config)),
            Err(error) => {
                note(&format!("error: {error}"));
                return ExitCode::from(EX_USAGE);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `mesh policy check`: the verdict is printed; the status says it.
        Err(error) if error.downcast_ref::<policy::NotAllowed>().is_some() => ExitCode::FAILURE,
        Err(error) if error.downcast_ref::<policy::CheckFailed>().is_some() => {
            note(&format!("error: {error:#}"));
            ExitCode::from(2)
        }
        // A bad flag found while running (the commands without a `Config` stage).
        Err(error) if error.downcast_ref::<UsageError>().is_some() => {
            note(&format!("error: {error:#}"));
            ExitCode::from(EX_USAGE)
        }
        Err(error) => {
            note(&format!("error: {error:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Installs the `tracing` subscriber: stderr, filtered by `MESH_LOG` (default `info`);
/// it never blocks or fails, whatever stderr is. Keep the guard until the end of `main`.
pub fn init_tracing() -> mesh_rt::log::LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    mesh_rt::log::init(filter)
}

/// Writes a command's output to stdout. A closed stdout (`mesh routes … | head -1`)
/// is not an error worth a panic, which is what `print!` would make of it: the rest
/// of the output goes nowhere.
pub(crate) fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Writes a line for the user to stderr (an error, a note), ignoring a closed stderr.
pub(crate) fn note(text: &str) {
    mesh_rt::log::print_error(text);
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("failed to start the async runtime: {e}"))?
        .block_on(f)
}

/// Names (of services, namespaces) are DNS-1123 labels; `what` is the flag or argument.
pub(crate) fn dns_label(what: &str, s: &str) -> Result<(), UsageError> {
    if mesh_api::names::is_dns_label(s) {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "{what} {s:?} is not a DNS label (lowercase letters, digits and '-')"
        )))
    }
}

// === impl UsageError ===

impl UsageError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for UsageError {}
