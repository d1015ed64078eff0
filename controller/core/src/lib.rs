//! `mesh-core`: the control plane's pure core, the part that does no IO and knows
//! neither kube nor tonic nor hyper, so the compiler keeps it that way and the CLI can
//! use it without linking the controller.
//!
//! - [`index`]: services, endpoint slices, pods and profiles, and one shared snapshot
//!   per destination a stream asks for; the backends feed it, the gRPC layer reads it.
//! - [`profile`]: ServiceProfiles: the document, its validation and decoding.
//! - [`file`](mod@file): the `file` discovery backend's format, parsed into the index's objects.
//! - [`yaml`]: the one YAML setup every reader and writer uses.
//! - [`ca`]: the identity service's certificate authority (certificates in,
//!   certificates out, the time given).
//! - [`tokens`]: the bootstrap token file's format.
//! - [`stats`]: the metrics API's store and answers: each meshed pod's bounded window
//!   of scrapes, and stat summaries, edges and routes computed from it.
//! - [`install`]: the names, labels and annotations of an install, and its values
//!   (`mesh install`'s options, which the injector and `mesh check` read back).
//! - [`inject`]: the proxy injector's decision and JSON Patch (the webhook's and
//!   `mesh inject --manual`'s).
//! - [`top`]: `mesh top`'s live table from tap events: requests joined across their
//!   events, rows by source, destination, method and path, bounded.
//!
//! `mesh-controller` re-exports each of these under its old path
//! (`mesh_controller::index`, `mesh_controller::identity::ca`, ...).

pub mod ca;
pub mod file;
pub mod health;
pub mod index;
pub mod inject;
pub mod install;
pub mod profile;
pub mod quantity;
pub mod stats;
pub mod tokens;
pub mod top;
pub mod yaml;
