//! The fake Kubernetes API server's tests, one test binary (one link) for all of them.

mod kube_api;
mod objects;
mod portforward;
mod reviews;
