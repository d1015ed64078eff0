//! `mesh top TYPE[/NAME]`: a live full-screen table of a resource's requests, from the
//! controller's tap API, as Linkerd's `top` shows them: Source, Destination, Method,
//! Path, Count, Best, Worst, Last and Success Rate, the busiest rows first.
//!
//! The events go into `mesh_core::top::Top` (the table itself: the join, the rows,
//! the success rule, the caps) as they come, and the screen is drawn from it at most
//! [`REDRAW`] times a second, never per event: drawing costs the same at 10 requests a
//! second as at 10,000, and so `top` keeps up with any rate the tap API sends.
//!
//! It takes the terminal over (raw mode, the alternate screen, no cursor) through a
//! [`Screen`] guard, whose `Drop` gives it back, so every way out restores it: `q`,
//! Esc or Ctrl-C (a key in raw mode), SIGINT, SIGTERM or SIGHUP, the tap stream ending
//! or failing (the error is printed after the terminal is restored), the terminal
//! failing to take a write (restored as far as it still can be; exit non-zero), and a
//! panic (a hook restores before the message is printed). Errors before the terminal is
//! taken (no terminal, no tap API, the target refused) are printed as any command's.

use crate::tap::{self, Filter, FilterArgs};
use crossterm::{
    cursor,
    event::{Event as TermEvent, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    queue, terminal,
};
use futures_util::StreamExt as _;
use mesh_api::tap::TapEvent;
use mesh_core::top::{self as table, Top};
use std::{
    collections::VecDeque,
    io::{IsTerminal as _, Write as _},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    time::Instant,
};

#[cfg(test)]
mod tests;

/// How often the screen is drawn: ten times a second, whatever the rate of events.
pub(crate) const REDRAW: Duration = Duration::from_millis(100);

/// Over how long the footer's rate of events is measured.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// Flags of `mesh top`.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    filter: FilterArgs,

    /// Merge rows over every source: one row per destination, method and path.
    #[arg(long)]
    hide_sources: bool,
}

/// `mesh top`, validated.
#[derive(Debug)]
pub struct Config {
    filter: Filter,
    hide_sources: bool,
}

// === impl Config ===

impl TryFrom<TopArgs> for Config {
    type Error = crate::UsageError;

    /// Refuses a stdout that is not a terminal before anything is touched: the table
    /// redraws in place, which a pipe or a file cannot show.
    fn try_from(args: TopArgs) -> Result<Self, Self::Error> {
        if !std::io::stdout().is_terminal() {
            return Err(crate::UsageError::new(
                "mesh top draws a live table and needs a terminal, and stdout is not one; \
                 to read the requests from a pipe or a file, use `mesh tap -o json`",
            ));
        }
        Ok(Self {
            filter: Filter::try_from(args.filter)?,
            hide_sources: args.hide_sources,
        })
    }
}

/// Runs `mesh top` until a key or a signal ends it, or the tap stream does.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (api, events) = config.filter.open(false).await?;
    let title = format!(
        "mesh top {} -n {}",
        config.filter.target,
        config.filter.namespace(&api)
    );
    let mut view = View::new(title, Top::new(config.hide_sources));
    let mut signals = Signals::new()?;
    let mut screen = Screen::take()?;
    let result = drive(&mut screen, &mut view, events, &mut signals).await;
    // The terminal is given back before the error is printed, so the user reads it.
    drop(screen);
    result
}

/// What a key asks of the loop, when it asks for more than a redraw.
enum Exit {
    /// `q`, Esc or Ctrl-C.
    Quit,
}

/// Feeds events into the table and draws it every [`REDRAW`], until a key or a
/// signal says stop or the stream ends.
async fn drive(
    screen: &mut Screen,
    view: &mut View,
    mut events: tonic::Streaming<TapEvent>,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    let mut keys = EventStream::new();
    let mut redraw = tokio::time::interval(REDRAW);
    redraw.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            next = events.message() => match next {
                Ok(Some(event)) => view.record(&event),
                Ok(None) => anyhow::bail!("the tap stream ended: the tap API closed it"),
                Err(status) => return Err(tap::stream_failed(&status)),
            },
            key = keys.next() => match key {
                Some(Ok(key)) => {
                    if let Some(Exit::Quit) = view.on_terminal(&key) {
                        return Ok(());
                    }
                }
                Some(Err(e)) => anyhow::bail!("cannot read the terminal: {e}"),
                None => anyhow::bail!("the terminal closed"),
            },
            signaled = signals.recv() => return signaled,
            _ = redraw.tick() => {
                let (width, height) = terminal::size().unwrap_or((80, 24));
                view.sample(Instant::now());
                screen.draw(&view.frame(width.into(), height.into()))?;
            }
        }
    }
}

/// What `top` shows: the table, where the user has scrolled to, and how many events
/// came.
struct View {
    title: String,
    top: Top,
    events: u64,
    /// (when, events by then), over the last [`RATE_WINDOW`]: the footer's rate.
    samples: VecDeque<(Instant, u64)>,
    /// The first row shown, and how many characters of each table line are scrolled
    /// off to the left.
    row_offset: usize,
    column_offset: usize,
    /// How many rows fit, as of the last frame (what a page is).
    page: usize,
}

// === impl View ===

impl View {
    fn new(title: String, top: Top) -> Self {
        Self {
            title,
            top,
            events: 0,
            samples: VecDeque::new(),
            row_offset: 0,
            column_offset: 0,
            page: 1,
        }
    }

    /// Puts one tap event into the table.
    fn record(&mut self, event: &TapEvent) {
        self.events += 1;
        self.top.record(event);
    }

    /// Acts on a key (or a resize, which the next frame takes care of).
    fn on_terminal(&mut self, event: &TermEvent) -> Option<Exit> {
        let TermEvent::Key(KeyEvent {
            code,
            modifiers,
            kind,
            ..
        }) = event
        else {
            return None;
        };
        if *kind == KeyEventKind::Release {
            return None;
        }
        const COLUMNS: usize = 8;
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return Some(Exit::Quit),
            KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => {
                return Some(Exit::Quit)
            }
            KeyCode::Up => self.row_offset = self.row_offset.saturating_sub(1),
            KeyCode::Down => self.row_offset = self.row_offset.saturating_add(1),
            KeyCode::PageUp => self.row_offset = self.row_offset.saturating_sub(self.page),
            KeyCode::PageDown => self.row_offset = self.row_offset.saturating_add(self.page),
            KeyCode::Home => self.row_offset = 0,
            KeyCode::Left | KeyCode::Char('a') => {
                self.column_offset = self.column_offset.saturating_sub(COLUMNS)
            }
            KeyCode::Right | KeyCode::Char('d') => {
                self.column_offset = self.column_offset.saturating_add(COLUMNS)
            }
            _ => {}
        }
        None
    }

    /// Notes how many events had come by `now`, for the rate.
    fn sample(&mut self, now: Instant) {
        self.samples.push_back((now, self.events));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Events a second over the samples kept.
    fn rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                (n1 - n0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// The screen's lines for a terminal `width` × `height`: the title, the table's
    /// header and as many rows as fit from the scrolled-to one, and the footer.
    fn frame(&mut self, width: usize, height: usize) -> Vec<String> {
        let rows = self.top.rows_by_count();
        // Title, blank, header above; blank and footer below.
        let page = height.saturating_sub(5).max(1);
        self.page = page;
        self.row_offset = self.row_offset.min(rows.len().saturating_sub(page));
        let shown = rows.iter().skip(self.row_offset).take(page);
        let mut cells: Vec<Vec<String>> = vec![header(self.top.hides_sources())];
        cells.extend(shown.map(|row| self.cells(row)));
        let table = align(&cells);
        let max_offset = table.iter().map(String::len).max().unwrap_or(0);
        self.column_offset = self.column_offset.min(max_offset.saturating_sub(1));

        let mut lines = vec![fit(
            &format!(
                "{}    (q quit; ↑ ↓ PgUp PgDn scroll rows, a d ← → columns)",
                self.title
            ),
            width,
        )];
        lines.push(String::new());
        for line in &table {
            lines.push(fit(&skip_chars(line, self.column_offset), width));
        }
        while lines.len() < height.saturating_sub(1) {
            lines.push(String::new());
        }
        lines.truncate(height.saturating_sub(1));
        lines.push(fit(&self.footer(rows.len()), width));
        lines
    }

    fn cells(&self, row: &table::Row) -> Vec<String> {
        let mut cells = Vec::with_capacity(9);
        if !self.top.hides_sources() {
            cells.push(row.source.clone());
        }
        cells.extend([
            row.destination.clone(),
            row.method.clone(),
            row.path.clone(),
            row.count.to_string(),
            latency(row.best),
            latency(row.worst),
            latency(row.last),
            format!("{:.2}%", row.success_rate() * 100.0),
        ]);
        cells
    }

    /// Events received and their rate (what the benchmark reads), then what the
    /// table holds and what its caps dropped.
    fn footer(&self, rows: usize) -> String {
        let dropped = self.top.evictions();
        let mut footer = format!(
            "events {} ({:.1}/s)  requests {}  rows {}  open {}",
            self.events,
            self.rate(),
            self.top.completed(),
            rows,
            self.top.open()
        );
        if dropped != table::Evictions::default() {
            footer.push_str(&format!(
                "  dropped: {} open, {} rows, {} unmatched",
                dropped.open, dropped.rows, dropped.unmatched
            ));
        }
        if self.row_offset > 0 {
            footer.push_str(&format!("  [from row {}]", self.row_offset + 1));
        }
        footer
    }
}

/// The table's column titles, Linkerd's.
fn header(hide_sources: bool) -> Vec<String> {
    let all = [
        "Source",
        "Destination",
        "Method",
        "Path",
        "Count",
        "Best",
        "Worst",
        "Last",
        "Success Rate",
    ];
    let skip = usize::from(hide_sources);
    all[skip..].iter().map(|s| s.to_string()).collect()
}

/// Rows of cells as lines, each column as wide as its widest cell, two spaces apart.
fn align(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                line.push_str(cell);
                let pad = width - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
            line.trim_end().to_string()
        })
        .collect()
}

/// A latency as Linkerd's `top` shows one: µs under a millisecond, ms under a
/// second, else seconds with two decimals (rounded half up, in integers). The
/// dashboard's `latency` (web/app/format.js) is checked against it.
pub fn latency(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let hundredths = (d.as_millis() + 5) / 10;
        format!("{}.{:02}s", hundredths / 100, hundredths % 100)
    }
}

/// `line` cut to `width` characters.
fn fit(line: &str, width: usize) -> String {
    line.chars().take(width).collect()
}

fn skip_chars(line: &str, n: usize) -> String {
    line.chars().skip(n).collect()
}

/// The signals that end `top`: SIGINT and SIGTERM quit; SIGHUP (the terminal went
/// away) is an error, since nobody saw the table.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

// === impl Signals ===

impl Signals {
    fn new() -> anyhow::Result<Self> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| anyhow::anyhow!("cannot handle {name}: {e}"))
        };
        Ok(Self {
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    async fn recv(&mut self) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.interrupt.recv() => Ok(()),
            _ = self.terminate.recv() => Ok(()),
            _ = self.hangup.recv() => Err(anyhow::anyhow!("the terminal hung up (SIGHUP)")),
        }
    }
}

/// Whether the terminal is `top`'s: what the panic hook reads to know whether there is
/// anything to restore.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The terminal, taken over: raw mode, the alternate screen, the cursor hidden.
/// Dropping it gives the terminal back as it was, as does a panic while it is held.
struct Screen {
    out: std::io::Stdout,
    /// One frame's bytes, written to the terminal at once.
    buffer: Vec<u8>,
}

// === impl Screen ===

impl Screen {
    /// Takes the terminal. If a step fails, what was done is undone.
    fn take() -> anyhow::Result<Self> {
        install_panic_hook();
        let screen = Self {
            out: std::io::stdout(),
            buffer: Vec::new(),
        };
        TAKEN.store(true, Ordering::SeqCst);
        terminal::enable_raw_mode().map_err(|e| anyhow::anyhow!("cannot use the terminal: {e}"))?;
        let mut out = std::io::stdout();
        crossterm::execute!(
            out,
            terminal::EnterAlternateScreen,
            cursor::Hide,
            terminal::Clear(terminal::ClearType::All)
        )
        .map_err(|e| anyhow::anyhow!("cannot use the terminal: {e}"))?;
        Ok(screen)
    }

    /// Draws a frame: every line in place, the rest of each line cleared, in one write.
    fn draw(&mut self, lines: &[String]) -> anyhow::Result<()> {
        self.buffer.clear();
        for (y, line) in lines.iter().enumerate() {
            let y = u16::try_from(y).unwrap_or(u16::MAX);
            // Writing into a Vec cannot fail.
            let _ = queue!(
                self.buffer,
                cursor::MoveTo(0, y),
                crossterm::style::Print(line),
                terminal::Clear(terminal::ClearType::UntilNewLine)
            );
        }
        self.out
            .write_all(&self.buffer)
            .and_then(|()| self.out.flush())
            .map_err(|e| anyhow::anyhow!("cannot write to the terminal: {e}"))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Gives the terminal back, as far as it still can be (each step is tried whatever
/// the others did): the main screen, the cursor, and the line discipline as it was.
fn restore() {
    if !TAKEN.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = std::io::stdout();
    let _ = crossterm::execute!(out, terminal::LeaveAlternateScreen);
    let _ = crossterm::execute!(out, cursor::Show);
    let _ = terminal::disable_raw_mode();
}

/// Restores the terminal before a panic's message is printed (which would otherwise
/// go to the alternate screen and vanish, leaving the terminal raw); once per process.
fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
