//! `mesh top`'s table, pure: tap events in (as plain values), rows out, sorted by count.
//!
//! A request is joined across its events as Linkerd's `top` joins them, by source,
//! destination and stream id; it becomes part of a row at its response's end, with
//! its latency (request-init to response-end, as the proxy measured it) and whether it
//! succeeded by Linkerd's rule ([`is_success`]). Rows are keyed by source,
//! destination, method and path (without the source under `--hide-sources`).
//!
//! It holds no clock and does no IO; events come in as plain values, or as the tap
//! API's `TapEvent`s through [`Top::record`] (the one reading of them), so `mesh top`,
//! the metrics API's `/api/top` and the dashboard compute the same table. Its
//! memory is bounded whatever the traffic: at most [`Limits::max_open`] requests
//! waiting for their end and [`Limits::max_rows`] rows; what a cap pushes out is
//! counted in [`Evictions`], so a table that lost something says so.
//!
//! ```
//! use mesh_core::top::{End, RequestInit, StreamKey, Top};
//! use std::time::Duration;
//!
//! let mut top = Top::new(false);
//! let key = StreamKey { source: None, destination: None, base: 1, stream: 7 };
//! top.request_init(key.clone(), RequestInit {
//!     source: "vote-bot".into(),
//!     destination: "web-0".into(),
//!     method: "GET".into(),
//!     path: "/api/list".into(),
//! });
//! top.response_init(&key, 200);
//! top.response_end(&key, End::Complete, Duration::from_millis(3));
//! let rows = top.rows_by_count();
//! assert_eq!((rows[0].path.as_str(), rows[0].count), ("/api/list", 1));
//! assert_eq!(rows[0].success_rate(), 1.0);
//! ```

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    time::Duration,
};

mod event;
pub mod json;
#[cfg(test)]
mod tests;

/// Which request an event belongs to: Linkerd's join key, the source and destination
/// addresses and the proxy's stream id (`base` for the connection, `stream` within it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    pub base: u32,
    pub stream: u64,
}

/// A request as its first event describes it; `source` and `destination` are the
/// names the table shows ([`peer_name`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInit {
    pub source: String,
    pub destination: String,
    pub method: String,
    pub path: String,
}

/// How a response's stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// It ended normally, without a gRPC status.
    Complete,
    /// It ended with this gRPC status (from its trailers).
    Grpc(u32),
    /// It was reset or failed before its end.
    Reset,
}

/// How much the table holds at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests seen starting and not yet ended. At the tap API's default of 100
    /// requests a second, 10,000 is 100 s of requests that never end (a tap stream
    /// that lost their end events, or streams held open); the oldest goes first.
    pub max_open: usize,
    /// Rows. A terminal shows a few dozen; 10,000 distinct (source, destination,
    /// method, path) keys is more than any screen can page through, and caps what a
    /// stream of unique paths (ids in paths) can make the table hold. The row with the
    /// fewest requests (the least recently counted among those) goes first, so the
    /// busiest rows, which the table is sorted by, stay.
    pub max_rows: usize,
}

/// What the caps pushed out, and ends that matched no request: the table is short by
/// these, and says so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evictions {
    /// Requests dropped while waiting for their end: at [`Limits::max_open`], or
    /// replaced by a request with the same key.
    pub open: u64,
    /// Rows dropped for newer ones ([`Limits::max_rows`]).
    pub rows: u64,
    /// Ends of requests the table never saw start (or had dropped).
    pub unmatched: u64,
}

/// One row: the requests from one source to one destination with one method and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Empty when sources are hidden.
    pub source: String,
    pub destination: String,
    pub method: String,
    pub path: String,
    /// Requests ended.
    pub count: u64,
    /// Of those, successes ([`is_success`]).
    pub successes: u64,
    /// The lowest, highest and latest latency (request-init to response-end).
    pub best: Duration,
    pub worst: Duration,
    pub last: Duration,
}

/// The live table: requests waiting for their end, and rows.
#[derive(Debug)]
pub struct Top {
    hide_sources: bool,
    limits: Limits,
    /// Requests waiting for their end, and their order of arrival (oldest first),
    /// which the cap evicts by.
    open: HashMap<StreamKey, Open>,
    arrivals: BTreeMap<u64, StreamKey>,
    rows: HashMap<RowKey, RowId>,
    by_id: HashMap<RowId, Slot>,
    /// Rows by (count, last counted, id): the first is the one the cap evicts.
    rank: BTreeSet<(u64, u64, RowId)>,
    /// Orders arrivals and row updates; never goes back.
    seq: u64,
    completed: u64,
    evictions: Evictions,
}

type RowId = u64;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RowKey {
    source: String,
    destination: String,
    method: String,
    path: String,
}

/// A row and when it was last counted (its place in the eviction order).
#[derive(Debug)]
struct Slot {
    row: Row,
    touched: u64,
}

#[derive(Debug)]
struct Open {
    seq: u64,
    row: RowKey,
    /// The response's HTTP status, once its headers came.
    status: Option<u16>,
}

/// Whether a request succeeded, by Linkerd's rule: an HTTP status below 500 (or
/// none: a stream that ended before its headers is judged by its end), and, for
/// gRPC, a status other than UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE or
/// DATA_LOSS; a stream reset, or one that failed before its end, is a failure.
pub fn is_success(http_status: Option<u16>, end: End) -> bool {
    /// UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS.
    const GRPC_FAILURES: [u32; 5] = [2, 4, 13, 14, 15];
    if http_status.is_some_and(|s| s >= 500) {
        return false;
    }
    match end {
        End::Complete => true,
        End::Grpc(code) => !GRPC_FAILURES.contains(&code),
        End::Reset => false,
    }
}

/// What the table shows for one end of a request: the pod's name when the event's
/// labels give it, else the IP (without the port, which is a client's ephemeral one
/// and would make a row per connection), else `-`.
pub fn peer_name(pod: Option<&str>, addr: Option<SocketAddr>) -> String {
    match (pod.filter(|p| !p.is_empty()), addr) {
        (Some(pod), _) => pod.to_string(),
        (None, Some(addr)) => addr.ip().to_string(),
        (None, None) => "-".to_string(),
    }
}

// === impl Limits ===

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_open: 10_000,
            max_rows: 10_000,
        }
    }
}

// === impl Row ===

impl Row {
    /// Successes over requests, from 0 to 1; 0 for a row with none (which the table
    /// never holds: a row is made by its first request).
    pub fn success_rate(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.successes as f64 / self.count as f64
    }

    /// Counts one request that ended `latency` after it started.
    fn count_one(&mut self, latency: Duration, success: bool) {
        if self.count == 0 {
            self.best = latency;
            self.worst = latency;
        } else {
            self.best = self.best.min(latency);
            self.worst = self.worst.max(latency);
        }
        self.last = latency;
        self.count += 1;
        self.successes += u64::from(success);
    }
}

// === impl Top ===

impl Top {
    /// An empty table; with `hide_sources`, rows merge every source.
    pub fn new(hide_sources: bool) -> Self {
        Self::with_limits(hide_sources, Limits::default())
    }

    /// An empty table with these caps (each at least 1).
    pub fn with_limits(hide_sources: bool, limits: Limits) -> Self {
        Self {
            hide_sources,
            limits: Limits {
                max_open: limits.max_open.max(1),
                max_rows: limits.max_rows.max(1),
            },
            open: HashMap::new(),
            arrivals: BTreeMap::new(),
            rows: HashMap::new(),
            by_id: HashMap::new(),
            rank: BTreeSet::new(),
            seq: 0,
            completed: 0,
            evictions: Evictions::default(),
        }
    }

    /// A request started. A key seen again replaces the request it named (its end
    /// was lost); at the cap, the oldest request waiting is dropped.
    pub fn request_init(&mut self, key: StreamKey, init: RequestInit) {
        if let Some(old) = self.open.remove(&key) {
            self.arrivals.remove(&old.seq);
            self.evictions.open += 1;
        }
        while self.open.len() >= self.limits.max_open {
            let Some((_, oldest)) = self.arrivals.pop_first() else {
                break;
            };
            self.open.remove(&oldest);
            self.evictions.open += 1;
        }
        let seq = self.next_seq();
        let row = RowKey {
            source: if self.hide_sources {
                String::new()
            } else {
                init.source
            },
            destination: init.destination,
            method: init.method,
            path: init.path,
        };
        self.arrivals.insert(seq, key.clone());
        self.open.insert(
            key,
            Open {
                seq,
                row,
                status: None,
            },
        );
    }

    /// A response's headers came, with this HTTP status.
    pub fn response_init(&mut self, key: &StreamKey, http_status: u16) {
        if let Some(open) = self.open.get_mut(key) {
            open.status = Some(http_status);
        }
    }

    /// A response ended, `latency` after its request started: the request is counted
    /// in its row. An end whose start the table never saw is counted as unmatched.
    pub fn response_end(&mut self, key: &StreamKey, end: End, latency: Duration) {
        let Some(open) = self.open.remove(key) else {
            self.evictions.unmatched += 1;
            return;
        };
        self.arrivals.remove(&open.seq);
        self.completed += 1;
        let success = is_success(open.status, end);
        let id = self.row_for(open.row);
        let touched = self.next_seq();
        let Some(slot) = self.by_id.get_mut(&id) else {
            return;
        };
        self.rank.remove(&(slot.row.count, slot.touched, id));
        slot.row.count_one(latency, success);
        slot.touched = touched;
        self.rank.insert((slot.row.count, touched, id));
    }

    /// Every row, the busiest first (ties in the order of their names, so that the
    /// table does not shuffle between redraws).
    pub fn rows_by_count(&self) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self.by_id.values().map(|s| &s.row).collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.source.cmp(&b.source))
                .then_with(|| a.destination.cmp(&b.destination))
                .then_with(|| a.method.cmp(&b.method))
                .then_with(|| a.path.cmp(&b.path))
        });
        rows
    }

    /// Requests counted in rows since the start (evicted rows' included).
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Requests waiting for their end.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// What the caps pushed out, and unmatched ends.
    pub fn evictions(&self) -> Evictions {
        self.evictions
    }

    /// Whether rows merge every source.
    pub fn hides_sources(&self) -> bool {
        self.hide_sources
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The row `key` names, made (evicting the least useful row at the cap) if new.
    fn row_for(&mut self, key: RowKey) -> RowId {
        if let Some(&id) = self.rows.get(&key) {
            return id;
        }
        while self.by_id.len() >= self.limits.max_rows {
            let Some((_, _, victim)) = self.rank.pop_first() else {
                break;
            };
            if let Some(slot) = self.by_id.remove(&victim) {
                self.rows.remove(&RowKey::of(&slot.row));
            }
            self.evictions.rows += 1;
        }
        let id = self.next_seq();
        let row = Row {
            source: key.source.clone(),
            destination: key.destination.clone(),
            method: key.method.clone(),
            path: key.path.clone(),
            count: 0,
            successes: 0,
            best: Duration::ZERO,
            worst: Duration::ZERO,
            last: Duration::ZERO,
        };
        self.rows.insert(key, id);
        self.by_id.insert(id, Slot { row, touched: id });
        self.rank.insert((0, id, id));
        id
    }
}

// === impl RowKey ===

impl RowKey {
    fn of(row: &Row) -> Self {
        Self {
            source: row.source.clone(),
            destination: row.destination.clone(),
            method: row.method.clone(),
            path: row.path.clone(),
        }
    }
}
