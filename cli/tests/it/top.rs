//! Process-level tests of `mesh top`: the real binary in a pseudo-terminal (a detached
//! tmux session of a fixed size, on a tmux server of the test's own), against a fake
//! tap API in the test process that streams a known set of events. The screen is read
//! with `capture-pane` until the expected rows show, and after `top` exits the
//! terminal must be as it was: the main screen (`alternate_on` 0), the cursor visible,
//! and the line discipline cooked (`stty -a`, run by the same shell right after `top`,
//! shows `icanon` and `echo`).
//!
//! Without tmux (found when the tests are built, by `cli/build.rs`) they are compiled
//! as ignored, so the runners count them as skipped; `scripts/test.sh` installs it.
// This measures real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

use futures_util::Stream;
use mesh_api::tap::{
    tap_api_server::{TapApi, TapApiServer},
    tap_event::{http, EndpointMeta, Http},
    TapByResourceRequest, TapEvent,
};
use std::{
    net::SocketAddr,
    path::Path,
    pin::Pin,
    process::Command,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};
use tokio::sync::{mpsc, Notify};
use tonic::{Request, Response, Status};

const POLL: Duration = Duration::from_millis(100);

/// `q` quits: the rows as the events say, sorted by count, then the terminal as it was.
#[test]
#[cfg_attr(
    no_tmux,
    ignore = "tmux is not installed (scripts/test.sh installs it)"
)]
fn top_shows_the_rows_and_restores_the_terminal_on_q() {
    quits_on("q");
}

/// Ctrl-C is a key in raw mode, and quits as `q` does.
#[test]
#[cfg_attr(
    no_tmux,
    ignore = "tmux is not installed (scripts/test.sh installs it)"
)]
fn top_restores_the_terminal_on_ctrl_c() {
    quits_on("C-c");
}

fn quits_on(keys: &str) {
    let Running {
        tmux,
        fake,
        stty,
        _dir,
    } = Running::start();

    let screen = tmux.wait_for("the four rows", |s| rows(s).len() == 4);
    let rows = rows(&screen);
    let at = |path: &str| rows.iter().position(|r| r[3] == path).unwrap();
    assert_eq!(
        rows[at("/api/list")],
        [
            "192.0.2.10",
            "web-0",
            "GET",
            "/api/list",
            "5",
            "1ms",
            "5ms",
            "5ms",
            "100.00%"
        ],
        "{screen}"
    );
    assert_eq!(
        rows[at("/api/vote")],
        [
            "192.0.2.10",
            "web-0",
            "POST",
            "/api/vote",
            "4",
            "10ms",
            "40ms",
            "40ms",
            "75.00%"
        ],
        "{screen}"
    );
    assert_eq!(
        rows[at("/emoji.Svc/List")],
        [
            "192.0.2.11",
            "emoji-0",
            "POST",
            "/emoji.Svc/List",
            "2",
            "1ms",
            "2ms",
            "2ms",
            "50.00%"
        ],
        "{screen}"
    );
    assert_eq!(
        rows[at("/api/leaderboard")],
        [
            "192.0.2.10",
            "192.0.2.2",
            "GET",
            "/api/leaderboard",
            "1",
            "300ms",
            "300ms",
            "300ms",
            "0.00%"
        ],
        "{screen}"
    );
    // Sorted by count.
    let counts: Vec<&str> = rows.iter().map(|r| r[4].as_str()).collect();
    assert_eq!(counts, ["5", "4", "2", "1"], "{screen}");
    assert!(
        screen.contains("Source") && screen.contains("Success Rate"),
        "{screen}"
    );
    assert!(
        screen.contains("mesh top deploy/web -n default"),
        "{screen}"
    );
    // 5 × 3 + 4 × 3 + 2 × 3 events, and the reset request's init and end.
    let footer = tmux.wait_for("the footer's count", |s| {
        s.lines().any(|l| l.starts_with("events 35 ("))
    });
    assert!(footer.contains("requests 12  rows 4  open 0"), "{footer}");
    // The request `top` sent: the target from the flags, the default rate.
    let asked = fake.requests();
    let target = asked[0].target.clone().expect("a target");
    assert_eq!(
        (
            target.kind.as_str(),
            target.name.as_str(),
            target.namespace.as_str()
        ),
        ("deploy", "web", "default")
    );
    assert_eq!(asked[0].max_rps, 100);
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "1",
        "top draws on the alternate screen"
    );

    tmux.keys(keys);
    let screen = tmux.wait_for("top to exit", |s| s.contains("exit="));
    assert!(screen.contains("exit=0"), "{screen}");
    assert_restored(&tmux, &stty);
}

/// The tap stream failing ends `top` with the error, printed on the restored terminal.
#[test]
#[cfg_attr(
    no_tmux,
    ignore = "tmux is not installed (scripts/test.sh installs it)"
)]
fn top_restores_the_terminal_when_the_stream_fails() {
    let Running {
        tmux,
        fake,
        stty,
        _dir,
    } = Running::start();
    tmux.wait_for("the rows", |s| rows(s).len() == 4);

    fake.fail.notify_one();
    let screen = tmux.wait_for("top to exit", |s| s.contains("exit="));
    assert!(screen.contains("exit=1"), "{screen}");
    assert!(
        screen.contains("error: the tap stream failed: the fake tap API failed on purpose"),
        "{screen}"
    );
    assert_restored(&tmux, &stty);
}

/// SIGTERM (a `kill`) quits and restores too.
#[test]
#[cfg_attr(
    no_tmux,
    ignore = "tmux is not installed (scripts/test.sh installs it)"
)]
fn top_restores_the_terminal_on_sigterm() {
    let Running {
        tmux,
        fake: _fake,
        stty,
        _dir,
    } = Running::start();
    tmux.wait_for("the rows", |s| rows(s).len() == 4);

    let top = tmux.top_pid();
    let status = Command::new("kill")
        .args(["-TERM", &top.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let screen = tmux.wait_for("top to exit", |s| s.contains("exit="));
    assert!(screen.contains("exit=0"), "{screen}");
    assert_restored(&tmux, &stty);
}

/// A terminal that goes away (the session killed: SIGHUP, then a terminal that takes
/// no more writes) ends `top`: it does not stay behind drawing into nothing.
#[test]
#[cfg_attr(
    no_tmux,
    ignore = "tmux is not installed (scripts/test.sh installs it)"
)]
fn top_exits_when_its_terminal_goes_away() {
    let Running {
        tmux,
        fake: _fake,
        _dir,
        ..
    } = Running::start();
    tmux.wait_for("the rows", |s| rows(s).len() == 4);
    let top = tmux.top_pid();
    tmux.tmux(&["kill-session", "-t", "top"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while mesh_rt::proc::stat(mesh_rt::proc::Pid::Of(top)).is_some_and(|s| s.state != 'Z') {
        assert!(
            Instant::now() < deadline,
            "mesh top (pid {top}) still runs 20 s after its terminal went away"
        );
        thread::sleep(POLL);
    }
}

/// Refused before the terminal is touched when stdout is not one.
#[test]
fn top_refuses_a_stdout_that_is_not_a_terminal() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["top", "deploy/web", "--api-addr", "127.0.0.1:1"])
        .output()
        .expect("run mesh top");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("needs a terminal") && err.contains("mesh tap -o json"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing drawn: {:?}", out.stdout);
}

/// `mesh top` running in its own tmux against the scripted fake tap API; after it
/// exits, the shell writes the terminal's settings (`stty -a`) to `stty`.
struct Running {
    tmux: Tmux,
    fake: FakeTap,
    stty: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start() -> Self {
        let tmux = Tmux::start();
        let fake = FakeTap::start(scripted());
        let dir = tempfile::tempdir().expect("tempdir");
        let stty = dir.path().join("stty");
        tmux.run(&top_command(fake.addr, &stty));
        Self {
            tmux,
            fake,
            stty,
            _dir: dir,
        }
    }
}

/// The shell command the pane runs: `top`, then its exit code and the terminal's
/// settings, then a wait, so the pane stays to be read.
pub(crate) fn top_command(tap: SocketAddr, stty: &Path) -> String {
    format!(
        "KUBECONFIG=/nonexistent '{}' top deploy/web --api-addr 127.0.0.1:1 --tap-addr {tap}; \
         echo exit=$?; stty -a > '{}'; sleep 120",
        env!("CARGO_BIN_EXE_mesh"),
        stty.display()
    )
}

/// The terminal as it was before `top`: main screen, cursor shown, cooked mode.
pub(crate) fn assert_restored(tmux: &Tmux, stty: &Path) {
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "0",
        "still on the alternate screen"
    );
    assert_eq!(
        tmux.display("#{cursor_flag}"),
        "1",
        "the cursor is still hidden"
    );
    let settings = wait_for_file(stty, |s| s.contains("icanon"));
    let flags: Vec<&str> = settings.split_whitespace().collect();
    for flag in ["icanon", "echo", "isig"] {
        assert!(
            flags.contains(&flag),
            "`{flag}` not set after top exited: {settings}"
        );
    }
}

/// Waits for `path` to hold what `done` wants, for at most 20 s; its text.
fn wait_for_file(path: &Path, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{}: not written within 20 s: {text:?}",
            path.display()
        );
        thread::sleep(POLL);
    }
}

/// The table's rows on a screen: lines of nine cells, the fifth a count and the last
/// a percentage (which the footer, also of nine words, is not).
pub(crate) fn rows(screen: &str) -> Vec<Vec<String>> {
    screen
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|cells| {
            cells.len() == 9 && cells[4].parse::<u64>().is_ok() && cells[8].ends_with('%')
        })
        .collect()
}

/// A tmux server of the test's own (its socket in a temporary directory, `-S`), with
/// one detached 160 × 40 session; killed with everything in it, and its socket
/// removed, when dropped.
pub(crate) struct Tmux {
    socket: String,
    _dir: tempfile::TempDir,
}

impl Tmux {
    /// A server of the test's own (tmux is here: the tests that need it are ignored
    /// otherwise, see `cli/build.rs`).
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            socket: dir.path().join("tmux").display().to_string(),
            _dir: dir,
        }
    }

    /// Starts the session running `command` (through `sh -c`).
    pub(crate) fn run(&self, command: &str) {
        self.run_in(command, None);
    }

    /// Starts the session running `command` in `dir`.
    pub(crate) fn run_in(&self, command: &str, dir: Option<&Path>) {
        let mut args = vec!["new-session", "-d", "-s", "top", "-x", "160", "-y", "40"];
        let dir = dir.map(|d| d.display().to_string());
        if let Some(dir) = &dir {
            args.extend(["-c", dir]);
        }
        args.push(command);
        self.tmux(&args);
    }

    /// What the pane shows now.
    pub(crate) fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "top"])
    }

    /// Waits (at most 60 s: the machine may be busy) until the screen shows what
    /// `done` wants; the screen.
    pub(crate) fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not on the screen within 60 s:\n{screen}"
            );
            thread::sleep(POLL);
        }
    }

    /// Types `keys` (tmux's names: `q`, `C-c`).
    pub(crate) fn keys(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", "top", keys]);
    }

    /// A tmux format (`#{alternate_on}`) for the pane, expanded.
    pub(crate) fn display(&self, format: &str) -> String {
        self.tmux(&["display-message", "-p", "-t", "top", format])
            .trim()
            .to_string()
    }

    /// `mesh top`'s pid: the pane's shell's `mesh` child.
    pub(crate) fn top_pid(&self) -> u32 {
        let shell: u32 = self.display("#{pane_pid}").parse().expect("the pane's pid");
        mesh_rt::proc::pids()
            .into_iter()
            .find(|&pid| {
                mesh_rt::proc::stat(mesh_rt::proc::Pid::Of(pid))
                    .is_some_and(|s| s.ppid == shell && s.comm == "mesh")
            })
            .expect("mesh top, the pane's shell's child")
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-S", &self.socket])
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-S", &self.socket, "kill-server"])
            .output();
    }
}

/// The events the fake streams: four rows' worth, each request's events in order.
fn scripted() -> Vec<TapEvent> {
    let mut events = Vec::new();
    let mut stream = 0;
    let mut request = |src: &str,
                       dst: &str,
                       pod: Option<&str>,
                       method: &str,
                       path: &str,
                       status: u32,
                       end: Option<http::response_end::End>,
                       ms: u64| {
        stream += 1;
        let id = Some(http::StreamId { base: 1, stream });
        let event = |e: http::Event| TapEvent {
            source: Some(src.parse::<SocketAddr>().unwrap().into()),
            destination: Some(dst.parse::<SocketAddr>().unwrap().into()),
            destination_meta: Some(EndpointMeta {
                labels: pod
                    .map(|p| ("pod".to_string(), p.to_string()))
                    .into_iter()
                    .collect(),
                identity: String::new(),
            }),
            http: Some(Http { event: Some(e) }),
            ..Default::default()
        };
        events.push(event(http::Event::RequestInit(http::RequestInit {
            id,
            method: method.into(),
            path: path.into(),
            ..Default::default()
        })));
        if status != 0 {
            events.push(event(http::Event::ResponseInit(http::ResponseInit {
                id,
                http_status: status,
                ..Default::default()
            })));
        }
        events.push(event(http::Event::ResponseEnd(http::ResponseEnd {
            id,
            since_request_init: Some(prost_types::Duration {
                seconds: 0,
                nanos: i32::try_from(ms * 1_000_000).unwrap(),
            }),
            end,
            ..Default::default()
        })));
    };
    let web = "192.0.2.2:8080";
    for ms in 1..=5 {
        request(
            "192.0.2.10:40000",
            web,
            Some("web-0"),
            "GET",
            "/api/list",
            200,
            None,
            ms,
        );
    }
    for (ms, status) in [(10, 200), (20, 500), (30, 200), (40, 200)] {
        request(
            "192.0.2.10:40001",
            web,
            Some("web-0"),
            "POST",
            "/api/vote",
            status,
            None,
            ms,
        );
    }
    for (ms, grpc) in [(1, 0), (2, 14)] {
        let end = Some(http::response_end::End::GrpcStatusCode(grpc));
        request(
            "192.0.2.11:40002",
            "192.0.2.3:8080",
            Some("emoji-0"),
            "POST",
            "/emoji.Svc/List",
            200,
            end,
            ms,
        );
    }
    // Reset before its headers: no response-init, and a failure.
    let reset = Some(http::response_end::End::Reset("cancelled".into()));
    request(
        "192.0.2.10:40003",
        web,
        None,
        "GET",
        "/api/leaderboard",
        0,
        reset,
        300,
    );
    events
}

type Events = Pin<Box<dyn Stream<Item = Result<TapEvent, Status>> + Send>>;

/// A tap API that answers every call with the scripted events, then holds the stream
/// open until `fail` is notified, when it fails it.
struct FakeTap {
    addr: SocketAddr,
    fail: Arc<Notify>,
    requests: Arc<Mutex<Vec<TapByResourceRequest>>>,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct FakeService {
    events: Arc<Vec<TapEvent>>,
    fail: Arc<Notify>,
    requests: Arc<Mutex<Vec<TapByResourceRequest>>>,
}

impl FakeTap {
    fn start(events: Vec<TapEvent>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the fake tap API");
        let addr = listener.local_addr().expect("its address");
        let fail = Arc::new(Notify::new());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let service = FakeService {
            events: Arc::new(events),
            fail: fail.clone(),
            requests: requests.clone(),
        };
        runtime.spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(
                    TapApiServer::new(service),
                    incoming,
                    std::future::pending::<()>(),
                )
                .await;
        });
        Self {
            addr,
            fail,
            requests,
            _runtime: runtime,
        }
    }

    fn requests(&self) -> Vec<TapByResourceRequest> {
        self.requests.lock().expect("requests").clone()
    }
}

#[tonic::async_trait]
impl TapApi for FakeService {
    type TapByResourceStream = Events;

    async fn tap_by_resource(
        &self,
        req: Request<TapByResourceRequest>,
    ) -> Result<Response<Events>, Status> {
        self.requests
            .lock()
            .expect("requests")
            .push(req.into_inner());
        let (tx, rx) = mpsc::channel(16);
        let events = self.events.clone();
        let fail = self.fail.clone();
        tokio::spawn(async move {
            for event in events.iter() {
                if tx.send(Ok(event.clone())).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = fail.notified() => {
                    let _ = tx.send(Err(Status::unavailable("the fake tap API failed on purpose"))).await;
                }
                _ = tx.closed() => {}
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
