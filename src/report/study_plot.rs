//! The synthetic study's pictures: the sweep (`KL(P ‖ P_h)` against h's training
//! fraction, a line per h size, a panel per staleness level) and the paper's toy (the
//! stale, true and corrected targets on the circle, with one query's three softmaxes).

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Float32Type;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plot::register_font;
use super::study::Setting;
use crate::error::{Error, Result};
use crate::store::batch;
use crate::store::parquet_io;

fn plot_error(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn prepare(path: &Path) -> Result<()> {
    register_font()?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    Ok(())
}

/// Draws the sweep of `settings` (the drift loss's, or every loss's when only one
/// was run) as a PNG.
pub fn sweep(settings: &[Setting], path: &Path) -> Result<()> {
    prepare(path)?;
    let err = plot_error(path);
    // Panels by staleness level (amplitude), lines by h size.
    let mut panels: BTreeMap<(u64, String), Vec<&Setting>> = BTreeMap::new();
    for s in settings {
        panels
            .entry((s.key("amplitude").to_bits(), s.loss.clone()))
            .or_default()
            .push(s);
    }
    if panels.is_empty() {
        return Err(Error::Usage("nothing to plot: no runs".into()));
    }
    let root =
        BitMapBackend::new(path, (640 * panels.len().min(4) as u32, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let areas = root.split_evenly((1, panels.len().min(4)));
    for (area, ((_, loss), members)) in areas.iter().zip(&panels) {
        draw_panel(area, loss, members).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// The series' legend box, at `at`.
fn legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    at: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(at)
        .draw()?;
    Ok(())
}

fn draw_panel(area: &DrawingArea<BitMapBackend, Shift>, loss: &str, s: &[&Setting]) -> DrawResult {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    let ys: Vec<f64> = s
        .iter()
        .flat_map(|m| [m.mean("kl_corrected"), m.mean("kl_stale")])
        .filter(|x| positive(*x))
        .collect();
    let xs: Vec<f64> = s.iter().map(|m| m.key("fraction")).collect();
    let (ylo, yhi) = ys
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
    let (xlo, xhi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    if ys.is_empty() || xs.is_empty() {
        return Ok(());
    }
    let first = s[0];
    let title = format!(
        "drift amplitude {} (staleness {:.2}), {} loss",
        first.key("amplitude"),
        first.mean("staleness"),
        loss
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(
            (xlo / 1.5..xhi * 1.5).log_scale(),
            (ylo / 2.0..yhi * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("fraction of the targets h trains on (log)")
        .y_desc("KL(P ‖ P_h) on held-out queries (log)")
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    let stale = s.iter().map(|m| m.mean("kl_stale")).sum::<f64>() / s.len() as f64;
    chart
        .draw_series(LineSeries::new(
            [(xlo / 1.5, stale), (xhi * 1.5, stale)],
            BLACK.stroke_width(2),
        ))?
        .label(format!("stale cache: {stale:.3}"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    let mut by_size: BTreeMap<u64, Vec<&Setting>> = BTreeMap::new();
    for m in s {
        by_size.entry(m.key("params") as u64).or_default().push(m);
    }
    for (i, (params, mut line)) in by_size.into_iter().enumerate() {
        line.sort_by(|a, b| a.key("fraction").total_cmp(&b.key("fraction")));
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = line
            .iter()
            .map(|m| (m.key("fraction"), m.mean("kl_corrected")))
            .filter(|p| positive(p.1))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(format!("h: {params} parameters"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        chart.draw_series(line.iter().filter_map(|m| {
            let (y, sd) = (m.mean("kl_corrected"), m.std.get("kl_corrected").copied()?);
            (positive(y - sd) && sd > 0.0).then(|| {
                ErrorBar::new_vertical(m.key("fraction"), y - sd, y, y + sd, color.filled(), 6)
            })
        }))?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    Ok(())
}

fn read_one(path: &Path) -> Result<RecordBatch> {
    let batches = parquet_io::read_all(path)?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| Error::Usage(format!("{}: no rows", path.display())))?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// Draws the toy picture of one run folder (its `targets.parquet` and `softmax.parquet`)
/// as a PNG: the first two coordinates of the stale, true and corrected targets, and the
/// three softmaxes of the run's query against each target's true angle.
pub fn picture(dir: &Path, path: &Path) -> Result<()> {
    let targets = read_one(&dir.join("targets.parquet"))?;
    let softmax = read_one(&dir.join("softmax.parquet"))?;
    prepare(path)?;
    let err = plot_error(path);
    let xy = |name: &str| -> Result<Vec<(f64, f64)>> {
        let (v, d) = batch::vectors_of(&targets, name)?;
        Ok(v.chunks(d)
            .map(|p| (f64::from(p[0]), f64::from(p[1])))
            .collect())
    };
    let (stale, fresh, corrected) = (xy("embedding")?, xy("fresh")?, xy("corrected")?);
    let p = |name: &str| -> Result<Vec<f64>> {
        let c = softmax
            .column_by_name(name)
            .ok_or_else(|| Error::Usage(format!("{}: no column `{name}`", dir.display())))?;
        Ok(c.as_primitive::<Float32Type>()
            .values()
            .iter()
            .map(|x| f64::from(*x))
            .collect())
    };
    let (p_true, p_stale, p_h) = (p("p_true")?, p("p_stale")?, p("p_corrected")?);
    let root = BitMapBackend::new(path, (1280, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(600);
    draw_circle(&left, &stale, &fresh, &corrected).map_err(|e| err(&e))?;
    let angle: Vec<f64> = fresh.iter().map(|(x, y)| y.atan2(*x)).collect();
    draw_softmaxes(&right, &angle, [&p_true, &p_stale, &p_h]).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

const COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(140, 140, 140),
    RGBColor(230, 110, 20),
];
const NAMES: [&str; 3] = ["true g(y)", "stale B[y]", "corrected h(B[y])"];

fn draw_circle(
    area: &DrawingArea<BitMapBackend, Shift>,
    stale: &[(f64, f64)],
    fresh: &[(f64, f64)],
    corrected: &[(f64, f64)],
) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .caption("targets (first two coordinates)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(-1.2..1.2, -1.2..1.2)?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 13))
        .draw()?;
    // Every fourth target, so the three sets stay readable.
    for (i, set) in [fresh, stale, corrected].into_iter().enumerate() {
        let c = COLORS[i];
        let r = [5, 3, 2][i];
        chart
            .draw_series(
                set.iter()
                    .step_by(4)
                    .map(|p| Circle::new(*p, r, c.filled())),
            )?
            .label(NAMES[i])
            .legend(move |(x, y)| Circle::new((x, y), 5, c.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

fn draw_softmaxes(
    area: &DrawingArea<BitMapBackend, Shift>,
    angle: &[f64],
    ps: [&Vec<f64>; 3],
) -> DrawResult {
    let ymax = ps
        .iter()
        .flat_map(|p| p.iter())
        .fold(0.0f64, |m, &x| m.max(x));
    let mut order: Vec<usize> = (0..angle.len()).collect();
    order.sort_by(|&a, &b| angle[a].total_cmp(&angle[b]));
    let mut chart = ChartBuilder::on(area)
        .caption(
            "one held-out query's softmax over the targets (β = 20)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-3.2..3.2, 0.0..ymax * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("angle of the true target (radians)")
        .y_desc("probability")
        .label_style(("sans-serif", 13))
        .draw()?;
    let names = ["P (true)", "P_stale", "P_h (corrected)"];
    for (i, p) in ps.iter().enumerate() {
        let c = COLORS[i];
        // Points, not lines: a strong drift folds the circle, so the stale and corrected
        // probabilities are not a function of the true angle alone.
        chart
            .draw_series(
                order
                    .iter()
                    .map(|&j| Circle::new((angle[j], p[j]), 2, c.filled())),
            )?
            .label(names[i])
            .legend(move |(x, y)| Circle::new((x, y), 5, c.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}
