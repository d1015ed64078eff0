//! `mesh version`: the CLI's version and the control plane's, as `linkerd version`
//! shows them.
//!
//! The control plane's version comes from the controller's API (`GET /api/version`),
//! wherever [`crate::api::Api::locate`] finds it. A control plane that cannot be reached
//! is reported as such, not as an error: the CLI's version is still worth printing.

use crate::api::{Api, ApiArgs};
use anyhow::Context as _;

/// Flags of `mesh version`.
#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// Only the CLI's version.
    #[arg(long)]
    client: bool,

    /// Print the versions alone, without labels.
    #[arg(long)]
    short: bool,

    #[command(flatten)]
    api: ApiArgs,
}

/// Prints the versions.
pub async fn run(args: VersionArgs) -> anyhow::Result<()> {
    let client = env!("CARGO_PKG_VERSION");
    let mut out = match args.short {
        true => format!("{client}\n"),
        false => format!("Client version: {client}\n"),
    };
    if !args.client {
        let server = match server_version(&args.api).await {
            Ok(v) => v,
            Err(e) => format!("unavailable ({e:#})"),
        };
        match args.short {
            true => out.push_str(&format!("{server}\n")),
            false => out.push_str(&format!("Server version: {server}\n")),
        }
    }
    crate::out(&out);
    Ok(())
}

/// The controller's version, from its API.
async fn server_version(api: &ApiArgs) -> anyhow::Result<String> {
    let doc = Api::locate(api)
        .await?
        .get_json("/api/version", &[])
        .await?;
    doc["version"]
        .as_str()
        .map(str::to_string)
        .context("the controller's answer names no version")
}
