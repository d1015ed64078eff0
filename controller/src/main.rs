//! `mesh-controller`: flags → [`Config`](mesh_controller::Config) (exit 64 when they
//! are wrong) → the controller, until SIGTERM or SIGINT.

use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match mesh_controller::config_from_args() {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Some(parent) = config.parent_pid {
        if let Err(error) = mesh_rt::parent::exit_with_parent(parent) {
            mesh_rt::log::print_error(&format!("mesh-controller: --parent-pid {parent}: {error}"));
            return ExitCode::FAILURE;
        }
    }
    let _log = mesh_controller::init_tracing(&config);
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(mesh_controller::run(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "mesh-controller failed");
            ExitCode::FAILURE
        }
    }
}
