//! A watch response: the stream of newline-delimited JSON events one watch request gets.
//!
//! The stream owns no task: it runs only while hyper polls it, so a client that stops
//! reading stops it, and a client that goes away drops it. It wakes on three things: a
//! write to the store (it then copies the new changes out under the lock and renders
//! them after releasing it), its bookmark timer, and its deadline (`timeoutSeconds`).
//! `FakeKube::expire` ends it, as a real API server ends watches whose history was
//! compacted.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::Stream;
use serde_json::json;
use tokio::{sync::watch, time::Instant};

use super::{
    store::{Change, Filter, Object, RvError},
    Inner, Kind, Pulse,
};

/// Where a watch starts.
pub(super) enum Start {
    /// After this resourceVersion, which the caller has checked is retained.
    After(u64),
    /// At the current state, which must be at least `not_older_than`: first one `ADDED`
    /// per selected object if `initial_events`, then, if `end_bookmark`, a bookmark
    /// marking the end of those (streaming lists).
    Now {
        not_older_than: u64,
        initial_events: bool,
        end_bookmark: bool,
    },
}

pub(super) struct WatchRequest {
    pub(super) kind: Kind,
    pub(super) filter: Filter,
    pub(super) start: Start,
    pub(super) bookmarks: bool,
    pub(super) timeout: Duration,
}

enum Pending {
    Change(Arc<Change>),
    Added(Arc<Object>),
    Line(Bytes),
}

struct WatchState {
    inner: Arc<Inner>,
    kind: Kind,
    filter: Filter,
    /// Every change up to this resourceVersion has been queued (or filtered out).
    cursor: u64,
    pending: VecDeque<Pending>,
    pulse: watch::Receiver<Pulse>,
    epoch: u64,
    deadline: Instant,
    bookmarks: bool,
    interval: Duration,
    next_bookmark: Instant,
    done: bool,
    _open: OpenWatch,
}

/// Counts a watch as open for as long as its stream lives.
struct OpenWatch(Arc<Inner>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.stats.bump(|s| s.open_watches -= 1);
    }
}

/// Frames are cut at about this size, so that a burst of thousands of events goes out in
/// a few writes without one huge allocation.
const FRAME_SIZE: usize = 64 * 1024;

/// Starts a watch, or says why its resourceVersion cannot be served.
pub(super) fn start(
    inner: Arc<Inner>,
    req: WatchRequest,
) -> Result<impl Stream<Item = Bytes> + Send, RvError> {
    // Subscribe before reading the store, so that no write between the two goes unseen.
    let pulse = inner.pulse.subscribe();
    let now = Instant::now();
    let (cursor, epoch, pending) = {
        let store = inner.store.lock().expect("store lock is not poisoned");
        let mut pending = VecDeque::new();
        match req.start {
            Start::After(rv) => {
                store.check_rv(req.kind, rv)?;
                let changes = store
                    .changes_after(req.kind, rv)
                    .expect("check_rv accepted the resourceVersion");
                pending.extend(changes.into_iter().map(Pending::Change));
            }
            Start::Now {
                not_older_than,
                initial_events,
                end_bookmark,
            } => {
                if not_older_than > store.rv() {
                    return Err(RvError::TooLarge {
                        requested: not_older_than,
                        current: store.rv(),
                    });
                }
                if initial_events {
                    pending.extend(
                        store
                            .snapshot(req.kind, &req.filter)
                            .into_iter()
                            .map(Pending::Added),
                    );
                }
                if end_bookmark {
                    pending.push_back(Pending::Line(bookmark(req.kind, store.rv(), true)));
                    inner.stats.bump(|s| s.bookmarks += 1);
                }
            }
        }
        (store.rv(), store.epoch(), pending)
    };
    let interval = pulse.borrow().bookmark_interval;
    inner.stats.bump(|s| {
        s.watches += 1;
        s.open_watches += 1;
    });
    let state = WatchState {
        _open: OpenWatch(inner.clone()),
        inner,
        kind: req.kind,
        filter: req.filter,
        cursor,
        pending,
        pulse,
        epoch,
        deadline: now + req.timeout,
        bookmarks: req.bookmarks,
        interval,
        next_bookmark: now + interval,
        done: false,
    };
    Ok(futures_util::stream::unfold(state, |mut st| async move {
        loop {
            let frame = st.frame();
            if !frame.is_empty() {
                return Some((frame, st));
            }
            if st.done {
                return None;
            }
            st.wait().await;
        }
    }))
}

impl WatchState {
    /// Renders pending events into one frame of at most about `FRAME_SIZE` bytes.
    fn frame(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        while out.len() < FRAME_SIZE {
            let Some(next) = self.pending.pop_front() else {
                break;
            };
            match next {
                Pending::Line(line) => out.put_slice(&line),
                Pending::Added(obj) => event(&mut out, "ADDED", &obj.json),
                Pending::Change(change) => self.render(&mut out, &change),
            }
        }
        out.freeze()
    }

    /// Renders one change as this watch sees it, as the API server's watch cache does:
    /// an object that starts matching the selector is `ADDED`, one that stops matching
    /// is `DELETED` (its last matching state, at the change's resourceVersion).
    fn render(&self, out: &mut BytesMut, change: &Change) {
        let now = !change.deleted && self.filter.matches(&change.obj);
        let before = change.prev.as_ref().is_some_and(|p| self.filter.matches(p));
        match (now, before) {
            (true, false) => event(out, "ADDED", &change.obj.json),
            (true, true) => event(out, "MODIFIED", &change.obj.json),
            (false, true) if change.deleted => event(out, "DELETED", &change.obj.json),
            (false, true) => {
                let prev = change.prev.as_ref().expect("matched before, so it existed");
                let gone = prev.restamped(self.kind, change.rv);
                event(out, "DELETED", &gone.json);
            }
            (false, false) => {}
        }
    }

    /// Queues the changes since `cursor`. A watch that fell so far behind that its
    /// changes were compacted is ended, as the API server ends watchers that cannot keep
    /// up; the client's next watch from its last resourceVersion then gets 410.
    fn catch_up(&mut self) {
        if self.done {
            return;
        }
        let store = self.inner.store.lock().expect("store lock is not poisoned");
        if store.epoch() != self.epoch {
            self.done = true;
            return;
        }
        match store.changes_after(self.kind, self.cursor) {
            Some(changes) => {
                self.pending
                    .extend(changes.into_iter().map(Pending::Change));
                self.cursor = store.rv();
            }
            None => self.done = true,
        }
    }

    async fn wait(&mut self) {
        tokio::select! {
            () = tokio::time::sleep_until(self.deadline) => self.done = true,
            () = tokio::time::sleep_until(self.next_bookmark), if self.bookmarks => {
                // Catch up first: a bookmark promises every earlier event was sent.
                self.catch_up();
                if !self.done {
                    self.pending.push_back(Pending::Line(bookmark(self.kind, self.cursor, false)));
                    self.inner.stats.bump(|s| s.bookmarks += 1);
                }
                self.next_bookmark = Instant::now() + self.interval;
            }
            changed = self.pulse.changed() => {
                if changed.is_err() {
                    self.done = true;
                    return;
                }
                let pulse = *self.pulse.borrow_and_update();
                let cut = self
                    .inner
                    .faults
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .cuts(self.kind);
                if cut {
                    self.done = true;
                    return;
                }
                if pulse.bookmark_interval != self.interval {
                    self.interval = pulse.bookmark_interval;
                    self.next_bookmark = self.next_bookmark.min(Instant::now() + self.interval);
                }
                if pulse.epoch != self.epoch || pulse.rv != self.cursor {
                    self.catch_up();
                }
            }
        }
    }
}

fn event(out: &mut BytesMut, kind: &str, object: &[u8]) {
    out.put_slice(br#"{"type":""#);
    out.put_slice(kind.as_bytes());
    out.put_slice(br#"","object":"#);
    out.put_slice(object);
    out.put_slice(b"}\n");
}

/// A `BOOKMARK` event: an object of the watched type with only its resourceVersion, and
/// for the end of a streaming list's initial events, the annotation saying so.
fn bookmark(kind: Kind, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let line = json!({
        "type": "BOOKMARK",
        "object": {"kind": kind.kind(), "apiVersion": kind.api_version(), "metadata": metadata},
    });
    let mut out = serde_json::to_vec(&line).expect("JSON serializes");
    out.push(b'\n');
    out.into()
}

/// An `ERROR` event carrying a `Status`, then the end: what a watch from a compacted
/// resourceVersion gets.
pub(super) fn error_line(status: &serde_json::Value) -> Bytes {
    let mut out =
        serde_json::to_vec(&json!({"type": "ERROR", "object": status})).expect("JSON serializes");
    out.push(b'\n');
    out.into()
}
