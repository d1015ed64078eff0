//! A child process whose stdout a test can wait on line by line.
//!
//! A reader thread drains stdout for the whole life of the child (so a chatty child never
//! blocks on a full pipe) and hands each line over a channel; stderr goes to a log file.
//! Dropping a [`Process`] kills it, and if the test is panicking, prints the tail of what
//! it said, which is usually the first thing one needs to read.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// How many lines of a dying test's process output are shown.
const TAIL_LINES: usize = 40;

/// A running child process, killed on drop.
#[derive(Debug)]
pub struct Process {
    label: String,
    child: Child,
    lines: Receiver<String>,
    stdout_seen: Vec<String>,
    stderr_path: PathBuf,
}

impl Process {
    /// Spawns `cmd` with stdout piped to this handle and stderr to `stderr_path`.
    pub fn spawn(
        label: impl Into<String>,
        mut cmd: Command,
        stderr_path: PathBuf,
    ) -> anyhow::Result<Self> {
        let label = label.into();
        let stderr = File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {label}: {cmd:?}"))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("stdout-{label}"))
            .spawn(move || {
                for line in BufReader::new(stdout).split(b'\n') {
                    let Ok(line) = line else { return };
                    let line = String::from_utf8_lossy(&line).trim_end().to_string();
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            })
            .context("spawning stdout reader thread")?;
        Ok(Self {
            label,
            child,
            lines,
            stdout_seen: Vec::new(),
            stderr_path,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the child prints a line containing `needle`, and returns that line.
    /// Fails at the deadline, or as soon as the child closes stdout (usually: it exited),
    /// quoting its stderr.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout_seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let output = self.describe();
                    bail!(
                        "{} printed no line containing {needle:?} within {timeout:?}\n{output}",
                        self.label,
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    let output = self.describe();
                    bail!(
                        "{} closed stdout (exit {status:?}) before printing {needle:?}\n{output}",
                        self.label,
                    )
                }
            }
        }
    }

    /// How many lines the child has printed so far that contain `needle` (lines already
    /// consumed by [`Process::wait_for_line`] included).
    pub fn lines_containing(&mut self, needle: &str) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.stdout_seen.push(line);
        }
        self.stdout_seen
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Whether the child has exited, without waiting.
    pub fn try_exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("checking on {}", self.label))
    }

    /// Fails, quoting the child's output, if it has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.try_exit_status()? {
            let output = self.describe();
            bail!("{} exited: {status}\n{output}", self.label);
        }
        Ok(())
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The tail of the child's stdout and stderr, for error messages.
    pub fn describe(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.stdout_seen.push(line);
        }
        let stdout = tail(&self.stdout_seen.join("\n"), TAIL_LINES);
        let stderr = tail(&self.stderr(), TAIL_LINES);
        format!(
            "--- {label} stdout (last {TAIL_LINES} lines) ---\n{stdout}\n--- {label} stderr ({path}) ---\n{stderr}",
            label = self.label,
            path = self.stderr_path.display(),
        )
    }

    /// Kills the child (SIGKILL) and reaps it. Safe to call more than once.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.describe());
        }
        self.kill();
    }
}

/// Free-function form of [`Process::wait_for_line`].
pub fn wait_for_line(
    child: &mut Process,
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    child.wait_for_line(needle, timeout)
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
