//! The vote-bot: the demo's traffic generator, a workload of its own behind its own proxy.
//!
//! It sends a steady `--rps` to `web`, mostly votes (so ~25% fail, courtesy of `voting`),
//! some listings (the gRPC hop) and a few leaderboard reads (the slow route). Requests are
//! sent on a fixed schedule rather than one after another, as users would send them, so a
//! slow route does not slow the rest of the traffic down; a cap on requests in flight keeps
//! a stalled mesh from piling up unbounded work. Every [`REPORT_EVERY`] it logs what it saw,
//! which is the client's view to compare with the proxies' metrics.
//!
//! Behind proxies it also calls `voting` itself, once every [`UNAUTHORIZED_EVERY`], with its
//! own identity, which `voting`'s policy does not admit (it takes `web`'s alone): those
//! requests are denied (403), and the denials show where operators look for them
//! (`mesh stat -o wide`, `mesh tap`, the dashboard's edges). A meshed caller with the
//! wrong identity shows more than an unmeshed one would: its denials are attributed to
//! it (the proxy's `client_id`), so they are an edge of their own, `vote-bot → voting`.

use super::{
    apps::EMOJI,
    client::AppClient,
    topology::{Topology, Workload},
};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use rand::Rng;
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{task::JoinSet, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// How often the bot logs its counts.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Beyond this many requests in flight, scheduled requests are skipped (and counted).
const MAX_IN_FLIGHT: usize = 512;

/// How often the bot calls `voting` directly, to be denied.
const UNAUTHORIZED_EVERY: Duration = Duration::from_secs(1);

/// How long requests already sent may take to finish once the bot is told to stop.
const DRAIN: Duration = Duration::from_secs(2);

#[derive(Copy, Clone, Debug)]
enum Route {
    Vote,
    List,
    Leaderboard,
}

#[derive(Debug, Default)]
struct Counts {
    ok: [AtomicU64; 3],
    failed: [AtomicU64; 3],
    skipped: AtomicU64,
    /// Direct calls to `voting` refused with 403, as its policy says they must be.
    denied: AtomicU64,
    /// Direct calls to `voting` answered otherwise (the policy not in force).
    not_denied: AtomicU64,
}

/// Sends traffic to `web` at `rps` until `shutdown` fires, then lets in-flight requests end.
pub(crate) async fn run(topology: Topology, proxied: bool, rps: u32, shutdown: CancellationToken) {
    let bot = topology.get(Workload::VoteBot);
    let web = topology.get(Workload::Web);
    let client = AppClient::http1(proxied.then_some(bot.outbound));
    let web = if proxied {
        Workload::Web.authority()
    } else {
        web.app.to_string()
    };

    let mut schedule = tokio::time::interval(Duration::from_secs(1) / rps.max(1));
    // After a stall, carry on at the set rate rather than bursting to catch up.
    schedule.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(REPORT_EVERY);
    report.reset();
    let counts = Arc::new(Counts::default());
    let mut in_flight = JoinSet::new();
    let mut unauthorized = tokio::time::interval(UNAUTHORIZED_EVERY);
    unauthorized.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let voting = format!("http://{}/leaderboard", Workload::Voting.authority());

    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = unauthorized.tick(), if proxied && in_flight.len() < MAX_IN_FLIGHT => {
                let (client, counts, uri) = (client.clone(), counts.clone(), voting.clone());
                in_flight.spawn(async move {
                    let denied = status(&client, uri).await == Some(StatusCode::FORBIDDEN);
                    let counter = if denied { &counts.denied } else { &counts.not_denied };
                    counter.fetch_add(1, Ordering::Relaxed);
                });
            }
            _ = schedule.tick() => {
                if in_flight.len() >= MAX_IN_FLIGHT {
                    counts.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let (route, path) = pick();
                let (client, counts, web) = (client.clone(), counts.clone(), web.clone());
                in_flight.spawn(async move {
                    let ok = send(&client, format!("http://{web}{path}")).await;
                    let counters = if ok { &counts.ok } else { &counts.failed };
                    counters[route as usize].fetch_add(1, Ordering::Relaxed);
                });
            }
            _ = report.tick() => counts.report(),
            Some(_) = in_flight.join_next() => {}
        }
    }

    // Requests already sent are let finish, so the proxies are idle when they are stopped
    // and their last metrics are complete.
    let drained = tokio::time::timeout(DRAIN, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        in_flight.abort_all();
    }
}

/// Chooses the next request: 70% votes, 20% listings, 10% leaderboard reads.
fn pick() -> (Route, String) {
    let mut rng = rand::thread_rng();
    match rng.gen_range(0..100) {
        0..70 => {
            let (shortcode, _) = EMOJI[rng.gen_range(0..EMOJI.len())];
            (Route::Vote, format!("/api/vote?choice={shortcode}"))
        }
        70..90 => (Route::List, "/api/list".to_string()),
        _ => (Route::Leaderboard, "/api/leaderboard".to_string()),
    }
}

/// Sends one GET and reads the whole response; `true` if it was a success.
async fn send(client: &AppClient, uri: String) -> bool {
    status(client, uri).await.is_some_and(|s| s.is_success())
}

/// Sends one GET and reads the whole response: its status, if it came whole.
async fn status(client: &AppClient, uri: String) -> Option<StatusCode> {
    let req = Request::get(uri).body(Full::default()).ok()?;
    match client.request(req).await {
        Ok(rsp) => {
            let status = rsp.status();
            rsp.into_body().collect().await.ok().map(|_| status)
        }
        Err(error) => {
            tracing::debug!(error = format!("{error:#}"), "request failed");
            None
        }
    }
}

// === impl Counts ===

impl Counts {
    /// Logs the counts since the last report and resets them.
    fn report(&self) {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let [vote, list, leaderboard] = [Route::Vote, Route::List, Route::Leaderboard]
            .map(|r| (take(&self.ok[r as usize]), take(&self.failed[r as usize])));
        info!(
            target: "vote-bot",
            vote_ok = vote.0,
            vote_failed = vote.1,
            list_ok = list.0,
            list_failed = list.1,
            leaderboard_ok = leaderboard.0,
            leaderboard_failed = leaderboard.1,
            skipped = take(&self.skipped),
            voting_denied = take(&self.denied),
            voting_not_denied = take(&self.not_denied),
            "responses in the last {}s",
            REPORT_EVERY.as_secs()
        );
    }
}
