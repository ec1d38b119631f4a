//! Progress on stderr: bars with a rate and an ETA on a terminal; elsewhere (under nohup,
//! a scheduler, a file) a line every few seconds with the phase, the rate, the ETA and
//! the last losses, through the log (so `--log json` gives it as fields).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// What the run is doing now, for the progress lines.
#[derive(Debug, Clone)]
struct Phase {
    name: String,
    unit: &'static str,
    done: u64,
    total: u64,
    started: Instant,
    /// When `done` last moved: the rate is measured up to then.
    moved: Instant,
    done_at_start: u64,
    note: String,
}

impl Phase {
    fn line(&self) -> (String, f64, Option<f64>) {
        let secs = (self.moved - self.started).as_secs_f64().max(1e-9);
        let rate = (self.done - self.done_at_start) as f64 / secs;
        let eta =
            (rate > 0.0 && self.total > self.done).then(|| (self.total - self.done) as f64 / rate);
        let mut s = match self.total {
            0 => format!("{}: {} {}", self.name, self.done, self.unit),
            t => format!("{}: {} of {t} {}", self.name, self.done, self.unit),
        };
        // No rate before a unit is done inside the phase: it would be 0, or, for a phase
        // started as its first unit ended, a unit over no time.
        if self.done > self.done_at_start {
            s.push_str(&format!(", {rate:.1} {}/s", self.unit));
        }
        if let Some(eta) = eta {
            s.push_str(&format!(", ETA {}", clock(eta)));
        }
        if !self.note.is_empty() {
            s.push_str(&format!("; {}", self.note));
        }
        (s, rate, eta)
    }
}

/// `1h02m`, `3m05s` or `42s`.
fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// The process's progress: bars on a terminal, else periodic lines.
pub struct Progress {
    bars: Option<MultiProgress>,
    phase: Arc<Mutex<Option<Phase>>>,
    stop: Arc<AtomicBool>,
}

impl Progress {
    /// Bars on stderr when `bars`; otherwise, with `every` seconds, a progress line that
    /// often (from a thread that ends with the run).
    pub fn new(bars: bool, every: Option<f64>) -> Self {
        let phase: Arc<Mutex<Option<Phase>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        if let (false, Some(every)) = (bars, every.filter(|s| *s > 0.0)) {
            let (phase, stop) = (phase.clone(), stop.clone());
            std::thread::spawn(move || heartbeat(&phase, &stop, every));
        }
        Self {
            bars: bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            phase,
            stop,
        }
    }

    /// Starts a phase of `total` units (0 when unknown), e.g. ("train", "steps", 500).
    pub fn phase(&self, name: &str, unit: &'static str, total: u64) {
        self.phase_at(name, unit, 0, total);
    }

    /// Starts a phase that is already `done` units in (a resumed run's training).
    pub fn phase_at(&self, name: &str, unit: &'static str, done: u64, total: u64) {
        if let Ok(mut p) = self.phase.lock() {
            *p = Some(Phase {
                name: name.to_string(),
                unit,
                done,
                total,
                started: Instant::now(),
                moved: Instant::now(),
                done_at_start: done,
                note: String::new(),
            });
        }
    }

    /// The phase has `done` units done; `note` (losses, say) replaces the last one unless
    /// empty.
    pub fn set_done(&self, name: &str, done: u64, note: String) {
        if let Ok(mut p) = self.phase.lock() {
            if let Some(p) = p.as_mut().filter(|p| p.name == name) {
                if done != p.done {
                    p.moved = Instant::now();
                }
                p.done = done;
                if !note.is_empty() {
                    p.note = note;
                }
            }
        }
    }

    /// The phase did `n` more units; `total` grows to at least what is known now.
    pub fn advance(&self, name: &str, n: u64, total: u64) {
        if let Ok(mut p) = self.phase.lock() {
            if let Some(p) = p.as_mut().filter(|p| p.name == name) {
                if n > 0 {
                    p.moved = Instant::now();
                }
                p.done += n;
                p.total = p.total.max(total);
            }
        }
    }

    /// A progress bar over training steps, with steps per second and an ETA.
    pub fn steps_bar(&self, len: u64) -> ProgressBar {
        let Some(multi) = &self.bars else {
            return ProgressBar::hidden();
        };
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] step {pos}/{len}, {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = multi.add(ProgressBar::new(len).with_style(style));
        bar.set_prefix("train");
        bar
    }

    /// A progress bar over rows with a rate and an ETA.
    pub fn bar(&self, label: &str, len: u64) -> ProgressBar {
        let Some(multi) = &self.bars else {
            return ProgressBar::hidden();
        };
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {human_pos}/{human_len} rows, {rate}, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} rows/s", state.per_sec());
            },
        )
        .progress_chars("=> ");
        let bar = multi.add(ProgressBar::new(len).with_style(style));
        bar.set_prefix(label.to_string());
        bar
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Logs the phase every `every` seconds until `stop`.
fn heartbeat(phase: &Mutex<Option<Phase>>, stop: &AtomicBool, every: f64) {
    let tick = Duration::from_secs_f64((every / 2.0).clamp(0.005, 0.1));
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        if last.elapsed().as_secs_f64() < every {
            continue;
        }
        last = Instant::now();
        let Some(p) = phase.lock().ok().and_then(|p| p.clone()) else {
            continue;
        };
        let (line, rate, eta) = p.line();
        tracing::info!(
            phase = p.name.as_str(),
            done = p.done,
            total = p.total,
            rate,
            eta_seconds = eta,
            "progress: {line}"
        );
    }
}
