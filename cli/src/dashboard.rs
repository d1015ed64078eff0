//! `mesh dashboard`: where the controller's dashboard is, found as every command finds
//! the controller ([`Api::locate`]): the running demo's URL, or in a cluster the
//! CLI's own port-forward to the controller's pod, which stays open until Ctrl-C. It
//! prints the URL (`http://127.0.0.1:PORT/`), and opens a browser on it only with
//! `--show` (`xdg-open`, or `open` on macOS; if that fails, a note says so and the
//! URL still works).
//!
//! The controller answers before the URL is printed (`/api/version`), so a URL that
//! is printed leads somewhere.

use crate::api::{Api, ApiArgs};

/// Flags of `mesh dashboard`.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Open the dashboard in the system's browser too.
    #[arg(long)]
    show: bool,

    #[command(flatten)]
    api: ApiArgs,
}

/// Prints the dashboard's URL; through a port-forward, keeps it open until Ctrl-C.
pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let api = Api::locate(&args.api).await?;
    // Reached before it is offered: an error names the port-forward if it failed.
    api.get_json("/api/version", &[]).await?;
    let url = format!("http://{}/", api.addr);
    crate::out(&format!("{url}\n"));
    if args.show {
        open(&url);
    }
    if !api.forwarded() {
        // The demo's (or --api-addr's) controller: the URL works as long as it runs.
        return Ok(());
    }
    crate::note(
        "the dashboard is reached through a port-forward to the controller: Ctrl-C stops it",
    );
    tokio::signal::ctrl_c().await?;
    drop(api);
    Ok(())
}

/// Opens `url` in the system's browser; a failure is a note, not an error.
fn open(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let spawned = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        crate::note(&format!(
            "cannot open a browser ({opener}: {e}); open {url} yourself"
        ));
    }
}
