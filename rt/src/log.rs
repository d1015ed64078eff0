//! Logging to stderr that never blocks a thread and never fails the process.
//!
//! A service's stderr is whatever its supervisor made it: a terminal, a file, a pipe
//! to a log collector that may fall behind, or a pipe whose reader has gone
//! (`mesh-controller 2>&1 | head -1`). Written to directly, a full pipe stalls the
//! thread that logs (in a proxy with one worker thread, all traffic), and a closed one
//! makes `tracing-subscriber` report the failure with `eprintln!`, which panics on a
//! closed stderr: the task that logged dies, and with it, in the controller, the one
//! that was to stop it on SIGTERM.
//!
//! So formatted lines go through a bounded queue to a writer thread, which alone
//! touches stderr. A line that finds the queue full is dropped and counted, never
//! waited for; the writer says how many were lost when it catches up. Write errors
//! (a closed pipe) are ignored: the lines go nowhere, and nothing else changes.
//!
//! ```no_run
//! let _guard = mesh_rt::log::init(tracing_subscriber::EnvFilter::new("info"));
//! tracing::info!("started");
//! // Dropping the guard at the end of `main` writes what is still queued, for a
//! // bounded time.
//! ```

use std::{
    io::{self, Write},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        mpsc, Arc,
    },
    time::Duration,
};
use tracing_subscriber::{fmt::MakeWriter, EnvFilter};

/// Lines queued for stderr at most. A burst larger than this, faster than stderr
/// takes it, loses lines rather than time.
const QUEUE_LINES: usize = 1024;

/// How long [`LogGuard`]'s drop waits for queued lines to be written: long enough for
/// a terminal or a file, short enough that a stuck pipe cannot hold up an exit.
const FLUSH_WAIT: Duration = Duration::from_millis(200);
const FLUSH_POLL: Duration = Duration::from_millis(2);

/// Installs the global `tracing` subscriber: `filter`, formatted for humans (colours
/// only on a terminal), written through a [`Stderr`] queue.
///
/// Keep the returned guard until the end of `main`.
pub fn init(filter: EnvFilter) -> LogGuard {
    let (writer, guard) = Stderr::spawn();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        // A failed write is the writer's business (and cannot happen: it queues).
        .log_internal_errors(false)
        .init();
    guard
}

/// Writes one line to stderr directly, ignoring errors: for messages printed before
/// logging starts or after it ends (a configuration error on the way out), where
/// `eprintln!` would panic on a closed stderr.
pub fn print_error(message: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(message.as_bytes());
    let _ = err.write_all(b"\n");
}

/// Counters the queue's two ends share.
#[derive(Debug, Default)]
struct Shared {
    /// Lines queued and not yet written.
    pending: AtomicUsize,
    /// Lines dropped because the queue was full (or the writer could not start).
    dropped: AtomicU64,
}

/// A `MakeWriter` whose writes queue each formatted event for the writer thread.
#[derive(Clone, Debug)]
pub struct Stderr {
    tx: mpsc::SyncSender<Queued>,
    shared: Arc<Shared>,
}

/// A line, and how many lines had been dropped when it was queued: the writer reports
/// a loss where it happened, after the lines queued before it.
type Queued = (u64, Vec<u8>);

/// How long the writer waits, idle, before it reports lines dropped since its last
/// line.
const IDLE_REPORT: Duration = Duration::from_secs(1);

/// Writes what is still queued when dropped, for at most a fraction of a second.
#[derive(Debug)]
pub struct LogGuard {
    shared: Arc<Shared>,
}

// === impl Stderr ===

impl Stderr {
    /// Starts the writer thread. Should the thread not start, every line is dropped
    /// (and counted): logging is not worth failing the process for.
    pub fn spawn() -> (Self, LogGuard) {
        let (tx, rx) = mpsc::sync_channel::<Queued>(QUEUE_LINES);
        let shared = Arc::new(Shared::default());
        let writer = Arc::clone(&shared);
        // If the thread cannot start, `rx` is dropped with the closure and every send
        // fails as disconnected: counted as dropped, as a full queue would be.
        let _ = std::thread::Builder::new()
            .name("log".into())
            .spawn(move || drain(rx, &writer, &mut io::stderr()));
        let guard = LogGuard {
            shared: Arc::clone(&shared),
        };
        (Self { tx, shared }, guard)
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Relaxed)
    }

    fn queue(&self, line: &[u8]) {
        self.shared.pending.fetch_add(1, Relaxed);
        let dropped = self.shared.dropped.load(Relaxed);
        if self.tx.try_send((dropped, line.to_vec())).is_err() {
            self.shared.pending.fetch_sub(1, Relaxed);
            self.shared.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// The writer thread: stderr's only user. Runs until every sender is gone.
fn drain(rx: mpsc::Receiver<Queued>, shared: &Shared, out: &mut impl Write) {
    let mut reported = 0;
    let mut report = |out: &mut dyn Write, dropped: u64| {
        if dropped > reported {
            let _ = writeln!(
                out,
                "({} log lines dropped: stderr did not keep up)",
                dropped - reported
            );
            reported = dropped;
        }
    };
    loop {
        match rx.recv_timeout(IDLE_REPORT) {
            Ok((dropped_before, line)) => {
                report(out, dropped_before);
                // A closed or broken stderr: the line goes nowhere, and that is all.
                let _ = out.write_all(&line);
                shared.pending.fetch_sub(1, Relaxed);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => report(out, shared.dropped.load(Relaxed)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                report(out, shared.dropped.load(Relaxed));
                return;
            }
        }
    }
}

impl Write for &Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // `tracing-subscriber` formats a whole event, then writes it in one call.
        self.queue(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = &'a Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

// === impl LogGuard ===

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut waited = Duration::ZERO;
        while self.shared.pending.load(Relaxed) > 0 && waited < FLUSH_WAIT {
            std::thread::sleep(FLUSH_POLL);
            waited += FLUSH_POLL;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A writer that blocks until told to go on, as a pipe nobody reads does.
    struct Stuck {
        gate: Arc<Mutex<()>>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.out.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer that always fails, as a closed pipe does.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    fn writer_with(
        out: impl Write + Send + 'static,
    ) -> (Stderr, Arc<Shared>, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::sync_channel::<Queued>(QUEUE_LINES);
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let mut out = out;
        let thread = std::thread::spawn(move || drain(rx, &s, &mut out));
        (
            Stderr {
                tx,
                shared: Arc::clone(&shared),
            },
            shared,
            thread,
        )
    }

    #[test]
    fn a_stuck_stderr_drops_lines_instead_of_blocking() {
        let gate = Arc::new(Mutex::new(()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let closed = gate.lock().unwrap();
        let (writer, shared, thread) = writer_with(Stuck {
            gate: Arc::clone(&gate),
            out: Arc::clone(&out),
        });
        // Far more than the queue holds: every write returns at once.
        for i in 0..QUEUE_LINES * 3 {
            (&writer)
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        let dropped = writer.dropped();
        assert!(
            dropped >= (QUEUE_LINES * 2 - 1) as u64,
            "a full queue drops: {dropped}"
        );
        drop(closed);
        drop(writer);
        thread.join().unwrap();
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("line 0\n"), "{text}");
        // Every loss is reported, where it happened: after the lines queued before it
        // (a line that found room after some losses comes after their report).
        let reported: u64 = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix('(')?
                    .split_once(" log lines dropped")?
                    .0
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert_eq!(reported, dropped, "{text}");
        let written: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
            .collect();
        assert!(written.windows(2).all(|w| w[0] < w[1]), "in order");
        assert_eq!(written.len() as u64 + dropped, (QUEUE_LINES * 3) as u64);
        assert_eq!(shared.pending.load(Relaxed), 0);
    }

    #[test]
    fn a_closed_stderr_is_not_an_error() {
        let (writer, shared, thread) = writer_with(Closed);
        for _ in 0..10 {
            assert!((&writer).write_all(b"nowhere\n").is_ok());
        }
        drop(writer);
        thread.join().unwrap();
        assert_eq!(shared.pending.load(Relaxed), 0, "every line was handled");
    }
}
