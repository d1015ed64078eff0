//! `mesh-proxy`: runs the proxy (configured by `MESH_PROXY_*`), or with `init`
//! installs a pod's iptables rules.

use mesh_proxy::{
    config::{Config, ProcessEnv},
    init::InitConfig,
};
use std::process::ExitCode;

/// Exit code for bad configuration (BSD `EX_USAGE`).
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("init") => return init(&args[1..]),
        Some("--version" | "-V") => {
            eprintln!("mesh-proxy {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("--help" | "-h") => {
            eprintln!("usage: mesh-proxy            run the proxy (configured by MESH_PROXY_* variables)\n       {}", mesh_proxy::init::USAGE);
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("mesh-proxy: unknown argument {other:?}; the proxy is configured by MESH_PROXY_* variables");
            return ExitCode::from(EX_USAGE);
        }
        None => {}
    }

    let config = match Config::from_env(&ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mesh-proxy: invalid configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&config.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "mesh-proxy: invalid configuration: MESH_PROXY_LOG={:?}: {e}",
                config.log
            );
            return ExitCode::from(EX_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
            eprintln!("mesh-proxy: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(mesh_proxy::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-proxy: {}", mesh_proxy::errors::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn init(args: &[String]) -> ExitCode {
    let config = match InitConfig::parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mesh-proxy init: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match config.run(&mut std::io::stderr()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-proxy init: {e}");
            ExitCode::FAILURE
        }
    }
}
