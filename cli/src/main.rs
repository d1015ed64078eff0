//! The `mesh` binary: parses flags and hands over to [`mesh_cli::run`].

fn main() -> std::process::ExitCode {
    let args = mesh_cli::Args::parse_or_exit();
    let _log = mesh_cli::init_tracing();
    mesh_cli::run(args)
}
