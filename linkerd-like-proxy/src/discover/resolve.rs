//! One destination's resolution task: a `Get` stream to the destination service,
//! applied to the destination's state as it arrives, re-opened with backoff when it
//! fails. It runs until its `Destination` is dropped (which aborts it), or until
//! the destination service refuses the destination.

use super::Endpoints;
use crate::profile::Profile;
use mesh_api::destination::{destination_client::DestinationClient, GetDestination};
use rand::Rng;
use std::{sync::Arc, time::Duration};
use tokio::sync::watch;
use tonic::{transport::Channel, Code};

/// The first retry waits up to this long...
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// ...each later one up to twice the previous, and never more than this.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub(super) async fn run(
    shared: Arc<Endpoints>,
    mut client: DestinationClient<Channel>,
    context: Arc<str>,
) {
    let mut backoff = Backoff::default();
    // Whether the last stream worked, so that an outage is logged once, not per retry.
    let mut healthy = true;
    loop {
        let req = GetDestination {
            path: shared.path.to_string(),
            context_token: context.to_string(),
        };
        let mut first = true;
        let status = follow(client.get(req).await, |update| {
            if shared.apply(update, first) && first {
                first = false;
                healthy = true;
                backoff.reset();
            }
        })
        .await;
        match status {
            Some(s) if s.code() == Code::InvalidArgument => {
                tracing::warn!(
                    dst = %shared.path,
                    message = s.message(),
                    "the destination service refuses this destination; its traffic goes where clients send it"
                );
                shared.refused();
                return;
            }
            Some(s) if healthy => {
                tracing::warn!(
                    dst = %shared.path,
                    code = ?s.code(),
                    message = s.message(),
                    "destination stream failed; keeping the last endpoints and reconnecting"
                );
            }
            Some(s) => {
                tracing::debug!(dst = %shared.path, code = ?s.code(), message = s.message(), "destination stream failed again");
            }
            None => tracing::debug!(dst = %shared.path, "destination stream ended; reconnecting"),
        }
        healthy = false;
        let wait = backoff.next(&mut rand::thread_rng());
        tokio::time::sleep(wait).await;
    }
}

/// One destination's profile task: a `GetProfile` stream, each profile compiled once
/// as it arrives and published; re-opened with backoff when it fails, keeping the last
/// profile meanwhile (the outage rule). A refused destination has no profile.
pub(super) async fn run_profile(
    tx: watch::Sender<ProfileState>,
    mut client: DestinationClient<Channel>,
    path: Arc<str>,
    context: Arc<str>,
) {
    let port = path
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(80);
    let mut backoff = Backoff::default();
    loop {
        let req = GetDestination {
            path: path.to_string(),
            context_token: context.to_string(),
        };
        let status = follow(client.get_profile(req).await, |p| {
            backoff.reset();
            // Route metrics name the service, as the profile does.
            let name: Arc<str> = if p.fully_qualified_name.is_empty() {
                path.clone()
            } else {
                format!("{}:{port}", p.fully_qualified_name).into()
            };
            let profile = Profile::from_proto(&p, port);
            tracing::debug!(dst = %path, routes = p.routes.len(), "profile updated");
            tx.send_replace(ProfileState::Known(Some(Arc::new(DstProfile {
                name,
                profile,
            }))));
        })
        .await;
        match status {
            Some(s) if s.code() == Code::InvalidArgument => {
                tx.send_replace(ProfileState::Known(None));
                return;
            }
            Some(s) => {
                tracing::debug!(dst = %path, code = ?s.code(), message = s.message(), "profile stream failed; keeping the last profile and reconnecting")
            }
            None => tracing::debug!(dst = %path, "profile stream ended; reconnecting"),
        }
        let wait = backoff.next(&mut rand::thread_rng());
        tokio::time::sleep(wait).await;
    }
}

/// Feeds each message of a stream just opened (or the status it was refused with) to
/// `each`, until it ends: `None` when the server ended it, else the status it failed
/// with. The one reader of the controller's server streams (destinations, profiles,
/// inbound policies); each caller re-opens with [`Backoff`].
pub(crate) async fn follow<T>(
    opened: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
    mut each: impl FnMut(T),
) -> Option<tonic::Status> {
    let mut stream = match opened {
        Ok(rsp) => rsp.into_inner(),
        Err(status) => return Some(status),
    };
    loop {
        match stream.message().await {
            Ok(Some(msg)) => each(msg),
            Ok(None) => return None,
            Err(status) => return Some(status),
        }
    }
}

/// What a destination's profile is.
#[derive(Clone, Debug)]
pub(crate) enum ProfileState {
    /// No answer yet.
    Pending,
    /// The answer: a profile, or none (the destination service refused the path).
    Known(Option<Arc<DstProfile>>),
}

/// A destination's compiled profile and the name its route metrics carry
/// (`<svc>.<ns>.svc.<cluster-domain>:<port>`, the `dst` label).
#[derive(Debug)]
pub(crate) struct DstProfile {
    pub(crate) name: Arc<str>,
    pub(crate) profile: Profile,
}

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// `[0, min(max, base × 2^n)]`, so that proxies that lost the controller together do
/// not all come back at the same instant.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub(crate) fn next(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = BACKOFF_BASE
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(rng.gen_range(0.0..=1.0))
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn backoff_doubles_to_a_cap_with_full_jitter() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut b = Backoff::default();
        let ceilings = [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000];
        for ceiling in ceilings {
            let d = b.next(&mut rng);
            assert!(d <= Duration::from_millis(ceiling), "{d:?} > {ceiling}ms");
        }
        // Jitter spreads waits over the whole range rather than near the ceiling.
        let waits: Vec<Duration> = (0..200).map(|_| b.next(&mut rng)).collect();
        assert!(waits.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(waits.iter().any(|d| *d < Duration::from_secs(2)));
        assert!(waits.iter().any(|d| *d > Duration::from_secs(8)));
        b.reset();
        assert!(b.next(&mut rng) <= BACKOFF_BASE);
    }
}
