//! Progress on stderr: bars with a rate and an ETA on a terminal; elsewhere (under nohup,
//! a scheduler, a file) a line every few seconds through the log (so `--log json` gives
//! it as fields). The line names what runs now: each unfinished bar (an `encode` node's
//! rows, an evaluation's corpus, queries and ranking) with its total, rate and ETA, or,
//! when none is running, the run's phase (training steps with the last losses).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{
    MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, WeakProgressBar,
};

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

/// The bars handed out when stderr is not a terminal: hidden, but counted, so the
/// progress lines can report them. Weak: a bar its operator dropped is gone.
type Watched = Arc<Mutex<Vec<WatchedBar>>>;

/// A bar the progress lines report, and the first position they saw it move from: its
/// rate counts from there (a bar made when the dataflow was built may wait long before
/// its first row, and that wait is no part of its rate).
struct WatchedBar {
    label: String,
    unit: &'static str,
    bar: WeakProgressBar,
    anchor: Option<(u64, Instant)>,
}

/// The process's progress: bars on a terminal, else periodic lines.
pub struct Progress {
    bars: Option<MultiProgress>,
    phase: Arc<Mutex<Option<Phase>>>,
    watched: Watched,
    stop: Arc<AtomicBool>,
}

impl Progress {
    /// Bars on stderr when `bars`; otherwise, with `every` seconds, a progress line that
    /// often (from a thread that ends with the run).
    pub fn new(bars: bool, every: Option<f64>) -> Self {
        let phase: Arc<Mutex<Option<Phase>>> = Arc::new(Mutex::new(None));
        let watched = Watched::default();
        let stop = Arc::new(AtomicBool::new(false));
        if let (false, Some(every)) = (bars, every.filter(|s| *s > 0.0)) {
            let (phase, watched, stop) = (phase.clone(), watched.clone(), stop.clone());
            std::thread::spawn(move || heartbeat(&phase, &watched, &stop, every));
        }
        Self {
            bars: bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            phase,
            watched,
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

    /// Replaces the phase's note (what it waits for, say).
    pub fn note(&self, name: &str, note: String) {
        if let Ok(mut p) = self.phase.lock() {
            if let Some(p) = p.as_mut().filter(|p| p.name == name) {
                p.note = note;
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

    /// A progress bar drawn on a terminal that the progress lines do not report (reading a
    /// table, which waits on the operators it feeds: its rate is theirs).
    pub fn quiet_bar(&self, label: &str, len: u64) -> ProgressBar {
        match &self.bars {
            Some(_) => self.bar(label, len),
            None => ProgressBar::hidden(),
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

    /// A progress bar over rows with a rate and an ETA: drawn on a terminal, else
    /// reported by the progress lines while it has rows to go.
    pub fn bar(&self, label: &str, len: u64) -> ProgressBar {
        self.bar_of(label, "rows", len)
    }

    /// A progress bar over `len` units (rows, queries).
    pub fn bar_of(&self, label: &str, unit: &'static str, len: u64) -> ProgressBar {
        let Some(multi) = &self.bars else {
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
            if let Ok(mut w) = self.watched.lock() {
                w.retain(|b| b.bar.upgrade().is_some());
                w.push(WatchedBar {
                    label: label.to_string(),
                    unit,
                    bar: bar.downgrade(),
                    anchor: None,
                });
            }
            return bar;
        };
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:>12}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit}, {{rate}}, ETA {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} {unit}/s", state.per_sec());
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

/// One progress line and its fields.
#[derive(Debug, Clone)]
struct Line {
    phase: String,
    text: String,
    done: u64,
    total: u64,
    rate: f64,
    eta: Option<f64>,
}

/// A bar's line while it has units to go: `label: done of total unit, rate, ETA`. The
/// rate counts from the first position seen moving, once half a second has passed.
fn bar_line(w: &mut WatchedBar, bar: &ProgressBar, now: Instant) -> Option<Line> {
    let (done, total) = (bar.position(), bar.length().unwrap_or(0));
    if bar.is_finished() || done >= total {
        return None;
    }
    if w.anchor.is_none() && done > 0 {
        w.anchor = Some((done, now));
    }
    let rate = w.anchor.map_or(0.0, |(from, at)| {
        let secs = (now - at).as_secs_f64();
        match secs >= 0.5 {
            true => (done - from) as f64 / secs,
            false => 0.0,
        }
    });
    let unit = w.unit;
    let mut text = format!("{}: {done} of {total} {unit}", w.label);
    let eta = (rate > 0.0).then(|| (total - done) as f64 / rate);
    if let Some(eta) = eta {
        text.push_str(&format!(", {rate:.1} {unit}/s, ETA {}", clock(eta)));
    }
    Some(Line {
        phase: w.label.clone(),
        text,
        done,
        total,
        rate,
        eta,
    })
}

/// What runs now: a line for each bar with units to go, or else the phase's line.
fn lines(phase: &Mutex<Option<Phase>>, watched: &Watched) -> Vec<Line> {
    let now = Instant::now();
    let lines: Vec<Line> = watched.lock().map_or_else(
        |_| Vec::new(),
        |mut w| {
            w.iter_mut()
                .filter_map(|b| {
                    let bar = b.bar.upgrade()?;
                    bar_line(b, &bar, now)
                })
                .collect()
        },
    );
    if !lines.is_empty() {
        return lines;
    }
    let Some(p) = phase.lock().ok().and_then(|p| p.clone()) else {
        return Vec::new();
    };
    let (text, rate, eta) = p.line();
    vec![Line {
        phase: p.name,
        text,
        done: p.done,
        total: p.total,
        rate,
        eta,
    }]
}

/// Logs what runs now every `every` seconds until `stop`.
fn heartbeat(phase: &Mutex<Option<Phase>>, watched: &Watched, stop: &AtomicBool, every: f64) {
    let tick = Duration::from_secs_f64((every / 2.0).clamp(0.005, 0.1));
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        if last.elapsed().as_secs_f64() < every {
            continue;
        }
        last = Instant::now();
        for l in lines(phase, watched) {
            tracing::info!(
                phase = l.phase.as_str(),
                done = l.done,
                total = l.total,
                rate = l.rate,
                eta_seconds = l.eta,
                "progress: {}",
                l.text
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(p: &Progress) -> Vec<String> {
        lines(&p.phase, &p.watched)
            .into_iter()
            .map(|l| l.text)
            .collect()
    }

    fn is_training(texts: &[String]) -> bool {
        texts.len() == 1
            && texts[0].starts_with("train: 3 of 10 steps")
            && texts[0].ends_with("; loss 1.0")
    }

    #[test]
    fn a_bar_with_rows_to_go_is_the_line_and_the_phase_comes_back_after_it() {
        let p = Progress::new(false, None);
        p.phase("train", "steps", 10);
        p.set_done("train", 3, "loss 1.0".into());
        assert!(is_training(&texts(&p)), "{:?}", texts(&p));
        let corpus = p.bar_of("dev evaluation after step 3: corpus", "rows", 1000);
        let queries = p.bar("encode queries", 0);
        corpus.inc(250);
        let now = texts(&p);
        assert_eq!(now.len(), 1, "a bar with nothing to go is no line: {now:?}");
        assert!(
            now[0].starts_with("dev evaluation after step 3: corpus: 250 of 1000 rows"),
            "{now:?}"
        );
        queries.set_length(40);
        queries.inc(10);
        assert_eq!(texts(&p).len(), 2);
        corpus.finish_and_clear();
        drop(queries);
        assert!(is_training(&texts(&p)), "{:?}", texts(&p));
    }
}
