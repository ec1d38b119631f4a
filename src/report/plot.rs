//! The pictures of `freshen compare`: `--plot`, test Recall@20 of each arm against the
//! target-encoder forwards its training paid (initial cache, refreshes and touched
//! targets; evaluation re-embeds the same for every arm and is left out), like Figure 2
//! of the paper, and against its wall seconds, with the seeds' spread; `--curves`, each
//! arm's dev Recall@20 over the training steps.

use std::path::Path;

use plotters::prelude::*;

use super::Arm;
use crate::error::{Error, Result};

/// Where a TrueType font is looked for (plotters draws text with one; `FRESHEN_FONT`
/// names another).
const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

pub(super) fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let candidates: Vec<String> = std::env::var("FRESHEN_FONT")
            .into_iter()
            .chain(FONT_PATHS.iter().map(|s| s.to_string()))
            .collect();
        let path = candidates
            .iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| {
                format!(
                    "no TrueType font for the plot (looked at {}; set FRESHEN_FONT to a .ttf file)",
                    candidates.join(", ")
                )
            })?;
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path}: not a usable TrueType font"))
    })
    .clone()
    .map_err(Error::Usage)
}

/// Target-encoder forwards of training: everything but evaluation.
fn training_forwards(a: &Arm) -> f64 {
    [
        "forwards_initial",
        "forwards_refresh",
        "forwards_touched",
        "forwards_subset",
    ]
    .iter()
    .map(|k| a.mean.get(*k).copied().unwrap_or(0.0))
    .sum()
}

/// "1.2M", "350k": a count short enough for an axis.
fn short(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// One point of the cost plot: the arm, its cost, test Recall@20 (%) and its spread.
type Point = (String, f64, f64, f64);

/// Which cost a panel of the cost plot puts on its x axis.
#[derive(Clone, Copy)]
enum Cost {
    /// Target-encoder forwards of training, log scale.
    Forwards,
    /// Wall seconds of the run, log scale.
    Seconds,
}

impl Cost {
    fn of(self, a: &Arm) -> f64 {
        match self {
            Cost::Forwards => training_forwards(a),
            Cost::Seconds => a.mean.get("seconds").copied().unwrap_or(0.0),
        }
    }

    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Cost::Forwards => (
                "against re-embedding cost",
                "target-encoder forwards of training (initial + refresh + touched + subset), log scale",
            ),
            Cost::Seconds => ("against wall time", "wall seconds of the run, log scale"),
        }
    }
}

fn plot_error(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Draws the arms' test Recall@20 against their training forwards (left) and against
/// their wall seconds (right) as one PNG, each arm with its seeds' spread.
pub fn plot(arms: &[Arm], path: &Path) -> Result<()> {
    register_font()?;
    if arms.is_empty() {
        return Err(Error::Usage("nothing to plot: no runs".into()));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let err = plot_error(path);
    let root = BitMapBackend::new(path, (1600, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, 2));
    for (area, cost) in panels.iter().zip([Cost::Forwards, Cost::Seconds]) {
        let points: Vec<Point> = arms
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    cost.of(a).max(1.0),
                    100.0 * a.mean.get("test_recall_at_20").copied().unwrap_or(0.0),
                    100.0 * a.std.get("test_recall_at_20").copied().unwrap_or(0.0),
                )
            })
            .collect();
        draw_cost_panel(area, &points, cost).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

type Panel<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// One panel: each arm's point with its spread, named, against one cost.
fn draw_cost_panel(area: &Panel, points: &[Point], cost: Cost) -> DrawResult {
    let (xmin, xmax) = points
        .iter()
        .fold((f64::MAX, 1.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (ymin, ymax) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.2 - p.3), hi.max(p.2 + p.3))
    });
    let pad = ((ymax - ymin) * 0.15).max(1.0);
    let (caption, x_desc) = cost.describe();
    let mut chart = ChartBuilder::on(area)
        .caption(format!("Test Recall@20 {caption}"), ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (xmin / 2.0..xmax * 2.0).log_scale(),
            (ymin - pad)..(ymax + pad),
        )?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .x_label_formatter(&|x| short(*x))
        .x_labels(6)
        .y_desc("test Recall@20 (%)")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, (name, x, y, s)) in points.iter().enumerate() {
        let color = Palette99::pick(i).mix(0.9);
        chart.draw_series(std::iter::once(ErrorBar::new_vertical(
            *x,
            y - s,
            *y,
            y + s,
            color.filled(),
            8,
        )))?;
        chart
            .draw_series(std::iter::once(Circle::new((*x, *y), 6, color.filled())))?
            .label(name.clone())
            .legend(move |(lx, ly)| Circle::new((lx, ly), 6, color.filled()));
        // The name right of its point (the x axis is logarithmic).
        chart.draw_series(std::iter::once(Text::new(
            name.clone(),
            (*x * 1.12, *y + pad * 0.04),
            ("sans-serif", 14),
        )))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

/// An arm's dev curve: (step, dev Recall@20 in %), the mean over its seeds at each step.
pub type Curve = (String, Vec<(f64, f64)>);

/// Draws each arm's dev Recall@20 against the training step as a PNG (step 0: the
/// starting model, where the runs scored it).
pub fn curves(curves: &[Curve], path: &Path) -> Result<()> {
    register_font()?;
    let err = plot_error(path);
    let all: Vec<&(f64, f64)> = curves.iter().flat_map(|c| c.1.iter()).collect();
    if all.is_empty() {
        return Err(Error::Usage(
            "nothing to draw: no run has dev metrics in its metrics.parquet".into(),
        ));
    }
    let xmax = all.iter().fold(1.0f64, |m, p| m.max(p.0));
    let (ymin, ymax) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let pad = ((ymax - ymin) * 0.1).max(0.5);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let root = BitMapBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Dev Recall@20 during training", ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax * 1.02, (ymin - pad)..(ymax + pad))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("training step")
        .y_desc("dev Recall@20 (%)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, points)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).mix(0.9);
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 16, ly)], color));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
