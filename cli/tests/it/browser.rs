//! A headless Chromium for the dashboard's tests, driven over the DevTools protocol
//! (CDP) through its WebSocket: Debian's `chromium`, started with a throwaway profile,
//! one page target attached in flat mode. [`Browser::start`], then [`Browser::open`] a
//! URL, [`Browser::wait_for`] a JavaScript condition (evaluated until it is true or a
//! deadline passes: no sleeps), [`Browser::eval`] to read values,
//! [`Browser::console_errors`] (what the page logged as errors, threw uncaught, or
//! the browser itself logged as an error, such as a failed load), [`Browser::screenshot`]
//! to `target/dashboard-screenshots/NAME.png`, [`Browser::heap`] for the JS heap.
//!
//! Dropping a [`Browser`] (also while a test panics) kills chromium's whole process
//! group and removes its profile directory. Tests that use it are compiled as ignored without chromium
//! (`cfg(no_chromium)`, see `cli/build.rs`); `scripts/test.sh` installs it.

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use serde_json::{json, Value};
use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long one protocol command may take before the harness gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long chromium may take to print its DevTools address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The window, as the dashboard's narrowest supported screen.
pub(crate) const WINDOW: (u32, u32) = (1280, 800);

/// Something the page or the browser reported as an error.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConsoleError {
    /// `console` (`console.error`/`console.assert`), `exception` (thrown and not
    /// caught), or the browser log's source (`network`, `security`, `javascript`...).
    pub(crate) source: String,
    pub(crate) text: String,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value>>>>>;

/// A running headless chromium with one page attached.
pub(crate) struct Browser {
    /// Chromium, leader of its own process group (its zygote, renderers and helpers).
    child: Child,
    /// The profile directory, removed on drop once every process of the group is dead.
    profile: PathBuf,
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: AtomicU64,
    session: String,
    errors: Arc<Mutex<Vec<ConsoleError>>>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop(&mut self.child, &self.profile);
    }
}

/// Kills chromium's whole process group (its helpers would otherwise go on writing
/// into the profile while it is removed), reaps it, and removes the profile.
fn stop(child: &mut Child, profile: &Path) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
    // Nothing writes there any more; a second pass covers a file that a process
    // wrote between the first pass's listing and its removal, before it was killed.
    for _ in 0..3 {
        if std::fs::remove_dir_all(profile).is_ok() || !profile.exists() {
            break;
        }
    }
}

impl Browser {
    /// Starts chromium, attaches to a new blank page and enables the domains whose
    /// events the harness collects.
    pub(crate) async fn start() -> Result<Self> {
        let profile = tempfile::Builder::new()
            .prefix("mesh-chromium-")
            .tempdir()
            .context("creating chromium's profile directory")?
            .keep();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(e).context("starting chromium");
            }
        };
        let Some(stderr) = child.stderr.take() else {
            stop(&mut child, &profile);
            bail!("chromium's stderr was not piped");
        };
        // Reads stderr to the end in a thread (a full pipe would stop chromium),
        // handing on the DevTools address when it is printed.
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut found = Some(found);
            let mut seen = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    if let Some(found) = found.take() {
                        let _ = found.send(Ok(url.trim().to_string()));
                    }
                } else if found.is_some() {
                    seen.push(line);
                }
            }
            if let Some(found) = found {
                let _ = found.send(Err(seen.join("\n")));
            }
        });
        let url =
            match tokio::task::spawn_blocking(move || address.recv_timeout(START_TIMEOUT)).await {
                Ok(Ok(Ok(url))) => url,
                Ok(Ok(Err(output))) => {
                    stop(&mut child, &profile);
                    bail!("chromium exited without a DevTools address; its stderr:\n{output}");
                }
                _ => {
                    stop(&mut child, &profile);
                    bail!("chromium printed no DevTools address within {START_TIMEOUT:?}");
                }
            };
        let mut browser = Self::connect(child, profile, &url).await?;
        let target = browser
            .send_to(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target = target["targetId"]
            .as_str()
            .ok_or_else(|| anyhow!("Target.createTarget answered no targetId: {target}"))?
            .to_string();
        let attached = browser
            .send_to(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("Target.attachToTarget answered no sessionId: {attached}"))?
            .to_string();
        for domain in ["Page", "Runtime", "Log", "Network", "Performance"] {
            browser.send(&format!("{domain}.enable"), json!({})).await?;
        }
        browser
            .send(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": WINDOW.0, "height": WINDOW.1,
                        "deviceScaleFactor": 1, "mobile": false }),
            )
            .await?;
        Ok(browser)
    }

    async fn connect(mut child: Child, profile: PathBuf, url: &str) -> Result<Self> {
        let (ws, _) = match tokio_tungstenite::connect_async(url).await {
            Ok(ws) => ws,
            Err(e) => {
                stop(&mut child, &profile);
                return Err(e).with_context(|| format!("connecting to chromium at {url}"));
            }
        };
        let (mut sink, mut stream) = ws.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let errors: Arc<Mutex<Vec<ConsoleError>>> = Arc::default();
        let (answers, events) = (pending.clone(), errors.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(message) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if let Some(id) = message["id"].as_u64() {
                    let answer = match message.get("error") {
                        Some(error) => Err(anyhow!("DevTools error: {error}")),
                        None => Ok(message["result"].clone()),
                    };
                    let waiter = answers.lock().ok().and_then(|mut p| p.remove(&id));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(answer);
                    }
                } else if let Some(error) = console_error(&message) {
                    if let Ok(mut errors) = events.lock() {
                        errors.push(error);
                    }
                }
            }
            // The connection is gone: every command still waiting fails now.
            if let Ok(mut waiting) = answers.lock() {
                for (_, waiter) in waiting.drain() {
                    let _ = waiter.send(Err(anyhow!("chromium's DevTools connection closed")));
                }
            }
        });
        Ok(Self {
            child,
            profile,
            outgoing,
            pending,
            next_id: AtomicU64::new(1),
            session: String::new(),
            errors,
        })
    }

    /// Sends one command to the page's session and waits for its result.
    pub(crate) async fn send(&self, method: &str, params: Value) -> Result<Value> {
        let session = self.session.clone();
        self.send_to(Some(&session), method, params).await
    }

    async fn send_to(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| anyhow!("the harness's command table is poisoned"))?
            .insert(id, tx);
        self.outgoing
            .send(Message::text(command.to_string()))
            .map_err(|_| anyhow!("chromium's DevTools connection closed"))?;
        match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer.with_context(|| method.to_string()),
            Ok(Err(_)) => bail!("{method}: chromium's DevTools connection closed"),
            Err(_) => bail!("{method}: no answer within {COMMAND_TIMEOUT:?}"),
        }
    }

    /// Navigates the page to `url` (returns once the navigation is committed).
    pub(crate) async fn open(&self, url: &str) -> Result<()> {
        let answer = self.send("Page.navigate", json!({ "url": url })).await?;
        if let Some(error) = answer["errorText"].as_str() {
            bail!("opening {url}: {error}");
        }
        Ok(())
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value.
    /// An exception is an error naming it.
    pub(crate) async fn eval(&self, expression: &str) -> Result<Value> {
        let answer = self
            .send(
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true,
                        "returnByValue": true }),
            )
            .await?;
        if let Some(details) = answer.get("exceptionDetails") {
            bail!("`{expression}` threw: {}", exception_text(details));
        }
        Ok(answer["result"]["value"].clone())
    }

    /// Evaluates `expression` until it is `true`, or fails at `timeout` with its last
    /// value. Each try is one round trip; between tries the page itself waits for its
    /// next animation frame, so no time is slept in the test.
    pub(crate) async fn wait_for(&self, expression: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let framed = format!(
            "new Promise(r => requestAnimationFrame(() => r(null))).then(() => ({expression}))"
        );
        loop {
            let last = self.eval(&framed).await;
            if matches!(last, Ok(Value::Bool(true))) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let last = match last {
                    Ok(value) => value.to_string(),
                    Err(e) => format!("{e:#}"),
                };
                bail!("`{expression}` still not true after {timeout:?}; last: {last}");
            }
        }
    }

    /// What has been reported as an error since the browser started.
    pub(crate) fn console_errors(&self) -> Vec<ConsoleError> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Saves a PNG of the page's viewport to `target/dashboard-screenshots/NAME.png`
    /// and returns its path.
    pub(crate) async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let answer = self
            .send("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = answer["data"]
            .as_str()
            .ok_or_else(|| anyhow!("Page.captureScreenshot answered no data"))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .context("decoding the screenshot")?;
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The page's JS heap in use after a full collection, in bytes: what a page
    /// keeps, for measuring that it keeps no more over time.
    pub(crate) async fn heap_after_collection(&self) -> Result<u64> {
        self.send("HeapProfiler.collectGarbage", json!({})).await?;
        Ok(self.heap().await?.0)
    }

    /// The page's JS heap: used and total bytes (`Runtime.getHeapUsage`).
    pub(crate) async fn heap(&self) -> Result<(u64, u64)> {
        let heap = self.send("Runtime.getHeapUsage", json!({})).await?;
        match (heap["usedSize"].as_f64(), heap["totalSize"].as_f64()) {
            (Some(used), Some(total)) => Ok((used as u64, total as u64)),
            _ => bail!("Runtime.getHeapUsage answered {heap}"),
        }
    }

    /// One metric of `Performance.getMetrics` (e.g. `JSHeapUsedSize`, `Nodes`).
    pub(crate) async fn metric(&self, name: &str) -> Result<f64> {
        let answer = self.send("Performance.getMetrics", json!({})).await?;
        answer["metrics"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == name))
            .and_then(|m| m["value"].as_f64())
            .ok_or_else(|| anyhow!("Performance.getMetrics has no {name}"))
    }
}

/// `target/dashboard-screenshots/` of the workspace (or of `CARGO_TARGET_DIR`).
pub(crate) fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("dashboard-screenshots")
}

/// The error an event reports, if it is one the harness collects.
fn console_error(event: &Value) -> Option<ConsoleError> {
    let params = &event["params"];
    match event["method"].as_str()? {
        "Runtime.consoleAPICalled" => {
            let kind = params["type"].as_str()?;
            if kind != "error" && kind != "assert" {
                return None;
            }
            let text = params["args"]
                .as_array()
                .map(|args| {
                    args.iter()
                        .map(|a| match a.get("value") {
                            Some(Value::String(s)) => s.clone(),
                            Some(v) => v.to_string(),
                            None => a["description"].as_str().unwrap_or("").to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            Some(ConsoleError {
                source: "console".into(),
                text,
            })
        }
        "Runtime.exceptionThrown" => Some(ConsoleError {
            source: "exception".into(),
            text: exception_text(&params["exceptionDetails"]),
        }),
        "Log.entryAdded" => {
            let entry = &params["entry"];
            if entry["level"] != "error" {
                return None;
            }
            let mut text = entry["text"].as_str().unwrap_or("").to_string();
            if let Some(url) = entry["url"].as_str() {
                text = format!("{text} ({url})");
            }
            Some(ConsoleError {
                source: entry["source"].as_str().unwrap_or("log").to_string(),
                text,
            })
        }
        _ => None,
    }
}

fn exception_text(details: &Value) -> String {
    details["exception"]["description"]
        .as_str()
        .or_else(|| details["text"].as_str())
        .unwrap_or("an exception")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        io::{Read as _, Write as _},
        net::TcpListener,
    };

    /// A loopback HTTP/1.1 server answering each path with fixed HTML.
    pub(super) fn serve(pages: &'static [(&'static str, &'static str)]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0; 4096];
                let mut request = Vec::new();
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request);
                let path = request.split(' ').nth(1).unwrap_or("/");
                let (status, body) = match pages.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => ("200 OK", *body),
                    None => ("404 Not Found", ""),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        format!("http://{addr}")
    }

    const CLEAN: &str = "<!doctype html><title>clean</title><link rel=icon href=data:,>\
        <p id=p>fine</p><script>document.title = 'ready';</script>";
    const BROKEN: &str = "<!doctype html><title>broken</title><link rel=icon href=data:,>\
        <script>console.error('deliberate', 42);</script>\
        <script>setTimeout(() => { document.title = 'ready'; }, 0);\
        throw new Error('uncaught on purpose');</script>";

    #[tokio::test]
    #[cfg_attr(no_chromium, ignore = "chromium is not installed")]
    async fn reports_console_errors_and_exceptions_and_nothing_on_a_clean_page() {
        let base = serve(&[("/clean", CLEAN), ("/broken", BROKEN)]);
        let browser = Browser::start().await.expect("start chromium");

        browser.open(&format!("{base}/clean")).await.expect("open");
        browser
            .wait_for("document.title === 'ready'", Duration::from_secs(10))
            .await
            .expect("clean page loads");
        assert_eq!(
            browser
                .eval("document.getElementById('p').textContent")
                .await
                .expect("eval"),
            json!("fine")
        );
        assert_eq!(
            browser.console_errors(),
            vec![],
            "a clean page reports nothing"
        );

        browser.open(&format!("{base}/broken")).await.expect("open");
        browser
            .wait_for("document.title === 'ready'", Duration::from_secs(10))
            .await
            .expect("broken page loads");
        let errors = browser.console_errors();
        assert!(
            errors
                .iter()
                .any(|e| e.source == "console" && e.text == "deliberate 42"),
            "console.error reported: {errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.source == "exception" && e.text.contains("uncaught on purpose")),
            "the uncaught exception reported: {errors:?}"
        );

        // A condition that never holds fails at its deadline, saying what it last was.
        let err = browser
            .wait_for("document.title === 'never'", Duration::from_millis(300))
            .await
            .expect_err("never true");
        assert!(format!("{err:#}").contains("still not true"), "{err:#}");
        // An exception in an evaluation is an error, not a value.
        let err = browser.eval("nope.nope").await.expect_err("throws");
        assert!(
            format!("{err:#}").contains("nope is not defined"),
            "{err:#}"
        );

        let shot = browser
            .screenshot("harness-broken")
            .await
            .expect("screenshot");
        let png = std::fs::read(&shot).expect("read screenshot");
        assert_eq!(
            &png[..8],
            b"\x89PNG\r\n\x1a\n",
            "a PNG at {}",
            shot.display()
        );
        let (used, total) = browser.heap().await.expect("heap");
        assert!(used > 0 && used <= total, "heap {used}/{total}");
        assert!(browser.metric("JSHeapUsedSize").await.expect("metric") > 0.0);
    }

    #[test]
    #[cfg_attr(no_chromium, ignore = "chromium is not installed")]
    fn a_panicking_test_leaves_no_chromium_and_no_profile() {
        let (tx, rx) = std::sync::mpsc::channel();
        let test = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let browser = Browser::start().await.expect("start chromium");
                let _ = tx.send((browser.child.id(), browser.profile.clone()));
                panic!("a test failing with the browser open");
            })
        });
        assert!(test.join().is_err(), "the thread panicked");
        let (pid, profile) = rx.recv().expect("the browser had started");
        assert!(!profile.exists(), "profile {} removed", profile.display());
        // Killed and reaped by the drop: its pid is gone from /proc, and no process of
        // its group (renderers, zygote) is left.
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "chromium {pid} still there"
        );
        let group: Vec<String> = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                // pid (comm) state ppid pgrp ...: the fields after the command's name.
                let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
                after.split(' ').nth(2) == Some(pid.to_string().as_str())
                    && after.split(' ').next() != Some("Z")
            })
            .collect();
        assert_eq!(group, Vec::<String>::new(), "chromium's group {pid} left");
    }
}
