//! The accuracy-against-cost plot of `freshen compare --plot`: test Recall@20 of each arm
//! against the target-encoder forwards its training paid (initial cache, refreshes and
//! touched targets; evaluation re-embeds the same for every arm and is left out), with the
//! seeds' spread, like Figure 2 of the paper.

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

/// Draws the arms' test Recall@20 against their training forwards as a PNG.
pub fn plot(arms: &[Arm], path: &Path) -> Result<()> {
    register_font()?;
    let err = |e: &dyn std::fmt::Display| Error::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let points: Vec<(String, f64, f64, f64)> = arms
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                training_forwards(a).max(1.0),
                100.0 * a.mean.get("test_recall_at_20").copied().unwrap_or(0.0),
                100.0 * a.std.get("test_recall_at_20").copied().unwrap_or(0.0),
            )
        })
        .collect();
    if points.is_empty() {
        return Err(Error::Usage("nothing to plot: no runs".into()));
    }
    let (xmin, xmax) = points
        .iter()
        .fold((f64::MAX, 1.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (ymin, ymax) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.2 - p.3), hi.max(p.2 + p.3))
    });
    let pad = ((ymax - ymin) * 0.15).max(1.0);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let root = BitMapBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Test Recall@20 against re-embedding cost",
            ("sans-serif", 26),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (xmin / 2.0..xmax * 2.0).log_scale(),
            (ymin - pad)..(ymax + pad),
        )
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(
            "target-encoder forwards of training (initial + refresh + touched + subset), log scale",
        )
        .x_label_formatter(&|x| short(*x))
        .x_labels(6)
        .y_desc("test Recall@20 (%)")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, x, y, s)) in points.iter().enumerate() {
        let color = Palette99::pick(i).mix(0.9);
        chart
            .draw_series(std::iter::once(ErrorBar::new_vertical(
                *x,
                y - s,
                *y,
                y + s,
                color.filled(),
                8,
            )))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Circle::new((*x, *y), 6, color.filled())))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(lx, ly)| Circle::new((lx, ly), 6, color.filled()));
        chart
            .draw_series(std::iter::once(Text::new(
                name.clone(),
                (*x, *y + if i % 2 == 0 { pad * 0.25 } else { -pad * 0.12 }),
                ("sans-serif", 15),
            )))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
