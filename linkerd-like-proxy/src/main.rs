//! `mesh-proxy`: runs the proxy (configured by `MESH_PROXY_*`), or with `init`
//! installs a pod's iptables rules.

use mesh_proxy::{
    config::{Config, ProcessEnv},
    init::InitConfig,
};
use mesh_rt::log::print_error;
use std::process::ExitCode;

/// Exit code for bad configuration (BSD `EX_USAGE`).
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("init") => return init(&args[1..]),
        Some("--version" | "-V") => {
            print_error(&format!("mesh-proxy {}", env!("CARGO_PKG_VERSION")));
            return ExitCode::SUCCESS;
        }
        Some("--help" | "-h") => {
            print_error(&format!("usage: mesh-proxy            run the proxy (configured by MESH_PROXY_* variables)\n       {}", mesh_proxy::init::USAGE));
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            print_error(&format!("mesh-proxy: unknown argument {other:?}; the proxy is configured by MESH_PROXY_* variables"));
            return ExitCode::from(EX_USAGE);
        }
        None => {}
    }

    let config = match Config::from_env(&ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            print_error(&format!("mesh-proxy: invalid configuration: {e}"));
            return ExitCode::from(EX_USAGE);
        }
    };
    // First, before anything is bound: a proxy whose supervisor is already gone has
    // nobody to serve.
    if let Some(parent) = config.parent_pid {
        if let Err(e) = mesh_rt::parent::exit_with_parent(parent) {
            print_error(&format!(
                "mesh-proxy: {}={parent}: {e}",
                mesh_proxy::config::ENV_PARENT_PID
            ));
            return ExitCode::FAILURE;
        }
    }
    let filter = match tracing_subscriber::EnvFilter::try_new(&config.log) {
        Ok(f) => f,
        Err(e) => {
            print_error(&format!(
                "mesh-proxy: invalid configuration: MESH_PROXY_LOG={:?}: {e}",
                config.log
            ));
            return ExitCode::from(EX_USAGE);
        }
    };
    // Logging never blocks traffic: a stuck or closed stderr loses lines, not time.
    let _log = mesh_rt::log::init(filter);
    for var in Config::unknown_vars(std::env::vars().map(|(k, _)| k)) {
        tracing::warn!(%var, "ignoring unknown variable");
    }

    let rt = if config.cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.cores)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&format!("mesh-proxy: failed to start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(mesh_proxy::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %mesh_proxy::errors::chain(&e), "mesh-proxy failed");
            ExitCode::FAILURE
        }
    }
}

fn init(args: &[String]) -> ExitCode {
    let config = match InitConfig::parse(args) {
        Ok(c) => c,
        Err(e) => {
            print_error(&format!("mesh-proxy init: {e}"));
            return ExitCode::from(EX_USAGE);
        }
    };
    match config.run(&mut std::io::stderr()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&format!("mesh-proxy init: {e}"));
            ExitCode::FAILURE
        }
    }
}
