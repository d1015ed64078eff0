//! `mesh-controller`: the control plane. It runs the destination service, which tells
//! proxies where a service's endpoints are and who they are, fed by a discovery
//! backend (Kubernetes watches or a YAML file); when given an issuer, the
//! [`identity`] service, which signs proxies' certificates; and, when given a serving
//! certificate, the [`webhook`], which refuses invalid ServiceProfiles at admission;
//! and the metrics API ([`api`] over what [`scrape`] keeps of every meshed proxy's
//! `/metrics`), so `stat`, `edges` and `routes` need no Prometheus; and the [`tap`]
//! API, which merges the live request streams of the proxies of the pods a caller
//! names.
//!
//! Start-up has two stages, as everywhere in mesh: [`Args`] (flags, with `MESH_*`
//! environment fallbacks; `flags.rs`) become a validated [`Config`] (`config.rs`) with
//! no side effects; then [`Config::build`] (`run.rs`) binds the ports and starts the tasks,
//! returning a [`Running`] controller that [`run`] waits on until a signal asks it to
//! stop.
//!
//! The core, [`index`] (with [`profile`], the file format and the CA), is the
//! `mesh-core` crate, which does no IO and cannot depend on kube, tonic or hyper; the
//! backends ([`k8s`], [`file`](mod@file)) feed it and the gRPC layer ([`destination`]) reads it.

pub mod admin;
pub mod api;
mod config;
pub mod dashboard;
pub mod destination;
pub mod file;
mod flags;
pub mod health;
mod http_server;
pub mod identity;
pub mod k8s;
pub mod metrics;
pub mod policy;
mod process;
mod run;
pub mod scrape;
pub mod tap;
mod tls_incoming;
pub mod webhook;

/// The pure core, under the paths it had before it became a crate of its own.
pub use mesh_core::{index, profile, yaml};

pub use config::{Config, Discovery, IdentityConfig, IdentityTokens};
pub use flags::{
    config_from_args, Args, Backend, IdentityArgs, InvalidConfig, WebhookArgs, EXIT_USAGE,
};
pub use run::{init_tracing, run, Running};
