//! `freshen study`: the synthetic study's runs side by side. Each run folder holds the
//! `fit` node's `metrics.parquet` (pipelines/synthetic.yaml); its last row (h after its
//! last step) is the run's result. Runs that differ only in their seed are one setting:
//! the table gives the mean and the sample standard deviation of the seeds, and the plot
//! draws `KL(P ‖ P_h)` against the fraction of targets h trained on, one line per h size,
//! one panel per staleness level, with `KL(P ‖ P_stale)` for reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};

use crate::error::{Error, Result};
use crate::store::parquet_io::{self, AtomicParquetWriter};

pub use super::study_plot::{picture, sweep};

/// The settings that make a study setting (everything but the seed), as written in the
/// metrics.
const KEY: [&str; 9] = [
    "dim",
    "amplitude",
    "frequency",
    "noise",
    "width",
    "depth",
    "params",
    "fraction",
    "train_targets",
];

/// The measurements averaged over seeds.
const MEASURED: [&str; 5] = [
    "kl_stale",
    "kl_corrected",
    "staleness",
    "corrected_staleness",
    "held_out_staleness",
];

/// One setting of the study, its seeds averaged.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// The loss h trained with (`drift` or `softmax`).
    pub loss: String,
    /// [`KEY`]'s values.
    pub key: BTreeMap<&'static str, f64>,
    /// Runs (seeds).
    pub runs: usize,
    /// Mean of each of [`MEASURED`].
    pub mean: BTreeMap<&'static str, f64>,
    /// Sample standard deviation of each (0 for one run).
    pub std: BTreeMap<&'static str, f64>,
}

impl Setting {
    /// A key value (NaN when absent).
    pub fn key(&self, k: &str) -> f64 {
        self.key.get(k).copied().unwrap_or(f64::NAN)
    }

    /// A measurement's mean (NaN when absent).
    pub fn mean(&self, k: &str) -> f64 {
        self.mean.get(k).copied().unwrap_or(f64::NAN)
    }
}

/// The last row of a run's metrics: `(loss kind, every numeric column)`.
fn last_row(dir: &Path) -> Result<(String, BTreeMap<String, f64>)> {
    let path = dir.join("metrics.parquet");
    if !path.exists() {
        return Err(Error::Usage(format!(
            "{}: no metrics.parquet (expected the output folder of a synthetic-study run)",
            dir.display()
        )));
    }
    let batches = parquet_io::read_all(&path)?;
    let b = batches
        .iter()
        .rev()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| Error::Usage(format!("{}: no rows", path.display())))?;
    let (values, mut strings) = super::row_values(b, b.num_rows() - 1);
    let loss = strings.remove("loss_kind").unwrap_or_default();
    for k in KEY.iter().chain(&MEASURED) {
        if !values.contains_key(*k) {
            return Err(Error::Usage(format!(
                "{}: no column `{k}` (expected a `fit` node's metrics)",
                path.display()
            )));
        }
    }
    Ok((loss, values))
}

/// Groups runs by setting (seeds averaged), sorted by loss, then [`KEY`] in order.
pub fn settings(dirs: &[PathBuf]) -> Result<Vec<Setting>> {
    type Runs = Vec<BTreeMap<String, f64>>;
    let mut groups: BTreeMap<(String, Vec<u64>), Runs> = BTreeMap::new();
    for d in dirs {
        let (loss, values) = last_row(d)?;
        // f64 bits of non-negative numbers sort as the numbers do.
        let key: Vec<u64> = KEY.iter().map(|k| values[*k].to_bits()).collect();
        groups.entry((loss, key)).or_default().push(values);
    }
    Ok(groups
        .into_iter()
        .map(|((loss, _), runs)| {
            let first = &runs[0];
            let key = KEY.iter().map(|k| (*k, first[*k])).collect();
            let (mut mean, mut std) = (BTreeMap::new(), BTreeMap::new());
            for k in MEASURED {
                let xs: Vec<f64> = runs.iter().map(|r| r[k]).collect();
                let (m, s) = mean_std(&xs);
                mean.insert(k, m);
                std.insert(k, s);
            }
            Setting {
                loss,
                key,
                runs: runs.len(),
                mean,
                std,
            }
        })
        .collect())
}

/// Mean and sample standard deviation (0 for one value).
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = match xs.len() {
        0 | 1 => 0.0,
        n => xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64,
    };
    (m, var.sqrt())
}

/// The table as Markdown.
pub fn table(settings: &[Setting]) -> String {
    let mut out = String::from(
        "| loss | dim | amplitude | frequency | noise | h params | fraction | trained on | runs \
         | staleness | KL(P‖P_stale) | KL(P‖P_h) | P_h / P_stale | h(B) staleness (held out) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in settings {
        let sd = |k: &str| s.std.get(k).copied().unwrap_or(0.0);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.4} ± {:.4} | {:.4} ± {:.4} | {:.3} | {:.4} |\n",
            s.loss,
            s.key("dim"),
            s.key("amplitude"),
            s.key("frequency"),
            s.key("noise"),
            s.key("params"),
            s.key("fraction"),
            s.key("train_targets"),
            s.runs,
            s.mean("staleness"),
            s.mean("kl_stale"),
            sd("kl_stale"),
            s.mean("kl_corrected"),
            sd("kl_corrected"),
            s.mean("kl_corrected") / s.mean("kl_stale"),
            s.mean("held_out_staleness"),
        ));
    }
    out
}

/// The table as Arrow: `loss`, `runs`, the key columns, then `<measure>_mean` and
/// `<measure>_std`.
pub fn batch(settings: &[Setting]) -> Result<RecordBatch> {
    let mut fields = vec![
        Field::new("loss", DataType::Utf8, false),
        Field::new("runs", DataType::UInt64, false),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            settings.iter().map(|s| s.loss.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            settings.iter().map(|s| s.runs as u64),
        )),
    ];
    for k in KEY {
        fields.push(Field::new(k, DataType::Float64, false));
        cols.push(Arc::new(Float64Array::from_iter_values(
            settings.iter().map(|s| s.key(k)),
        )));
    }
    for k in MEASURED {
        for (suffix, mean) in [("mean", true), ("std", false)] {
            fields.push(Field::new(
                format!("{k}_{suffix}"),
                DataType::Float64,
                false,
            ));
            cols.push(Arc::new(Float64Array::from_iter_values(
                settings.iter().map(|s| {
                    let m = if mean { &s.mean } else { &s.std };
                    m.get(k).copied().unwrap_or(f64::NAN)
                }),
            )));
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// `freshen study`: loads the runs, writes the table as Parquet (and the sweep plot),
/// draws the toy picture of one run, and returns the Markdown table.
pub fn study(
    dirs: &[PathBuf],
    out: &Path,
    plot: Option<&Path>,
    toy: Option<(&Path, &Path)>,
) -> Result<String> {
    let mut text = String::new();
    if !dirs.is_empty() {
        let settings = settings(dirs)?;
        let b = batch(&settings)?;
        let mut w = AtomicParquetWriter::create(out, b.schema())?;
        w.write(&b)?;
        w.finish()?.commit()?;
        if let Some(p) = plot {
            sweep(&settings, p)?;
        }
        text = table(&settings);
    }
    if let Some((dir, png)) = toy {
        picture(dir, png)?;
    }
    Ok(text)
}
