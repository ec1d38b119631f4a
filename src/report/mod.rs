//! Reading finished training runs back: the result table a run prints, and `freshen
//! compare`, which puts many runs side by side (seeds of one arm averaged) and writes the
//! table as Parquet and the accuracy-against-cost plot as PNG.

mod plot;
pub mod study;
mod study_plot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, UInt64Type};

use crate::error::{Error, Result};
use crate::store::parquet_io::{self, AtomicParquetWriter};
use crate::store::tables::LEDGER_REASONS;

pub use plot::{curves, plot};

/// The numbers of one finished run, read from its `summary.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The run's label (its folder name in `compare`, the pipeline name when printed).
    pub label: String,
    /// Every numeric column by name (nulls left out).
    pub values: BTreeMap<String, f64>,
    /// `select_by`.
    pub select_by: String,
}

/// Row `row` of `b`: its numeric columns (float64 and uint64, as f64) and its string
/// columns, by name; nulls left out.
pub(crate) fn row_values(
    b: &RecordBatch,
    row: usize,
) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let (mut values, mut strings) = (BTreeMap::new(), BTreeMap::new());
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if c.is_null(row) {
            continue;
        }
        let name = f.name().clone();
        match f.data_type() {
            DataType::Float64 => {
                values.insert(name, c.as_primitive::<Float64Type>().value(row));
            }
            DataType::UInt64 => {
                values.insert(name, c.as_primitive::<UInt64Type>().value(row) as f64);
            }
            DataType::Utf8 => {
                strings.insert(name, c.as_string::<i32>().value(row).to_string());
            }
            _ => {}
        }
    }
    (values, strings)
}

impl RunSummary {
    /// Reads the single row of a summary batch.
    pub fn from_batch(label: &str, b: &RecordBatch) -> Result<Self> {
        if b.num_rows() != 1 {
            return Err(Error::Usage(format!(
                "a summary has one row, this one has {}",
                b.num_rows()
            )));
        }
        let (mut values, mut strings) = row_values(b, 0);
        // The deployable index's recall (h(B), no re-embedding) as a share of the
        // re-embedded corpus's, per run, so that seeds average the share.
        for k in DEPLOY_AT {
            let (c, t) = (
                values.get(&format!("corrected_recall_at_{k}")),
                values.get(&format!("test_recall_at_{k}")),
            );
            if let (Some(&c), Some(&t)) = (c, t) {
                if t > 0.0 {
                    values.insert(format!("deploy_share_at_{k}"), c / t);
                }
            }
        }
        let select_by = strings.remove("select_by").unwrap_or_default();
        Ok(Self {
            label: label.to_string(),
            values,
            select_by,
        })
    }

    /// Reads `dir/summary.parquet`, labelled by the folder's name.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("summary.parquet");
        if !path.exists() {
            return Err(Error::Usage(format!(
                "{}: no summary.parquet (expected the output folder of a finished training run)",
                dir.display()
            )));
        }
        let batches = parquet_io::read_all(&path)?;
        let b = batches
            .first()
            .ok_or_else(|| Error::data(&path, None, "the summary is empty"))?;
        let label = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Self::from_batch(&label, b).map_err(|e| Error::data(&path, None, e.to_string()))
    }

    fn get(&self, key: &str) -> f64 {
        self.values.get(key).copied().unwrap_or(f64::NAN)
    }
}

/// The cut-offs at which the deployable index's recall is compared with the re-embedded.
const DEPLOY_AT: [usize; 2] = [1, 20];

/// The metric columns of tables, as (summary column, header).
const METRICS: [(&str, &str); 5] = [
    ("recall_at_1", "R@1"),
    ("recall_at_5", "R@5"),
    ("recall_at_20", "R@20"),
    ("recall_at_100", "R@100"),
    ("mrr_at_10", "MRR@10"),
];

fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n);
    let (sign, digits) = s.split_at(if s.starts_with('-') { 1 } else { 0 });
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// The short result table a training run prints at its end.
pub fn result_table(s: &RunSummary) -> String {
    let (best, steps) = (s.get("best_step") as u64, s.get("steps") as u64);
    let when = match best {
        0 => format!("the starting model (no step of {steps} beat it)"),
        _ => format!("after {best} of {steps} steps"),
    };
    let mut out = format!(
        "{}: best {when} by dev {} ({:.4})\n",
        s.label,
        s.select_by,
        s.get("best_dev")
    );
    out.push_str(&format!("{:<28}", "test (%)"));
    for (_, h) in METRICS {
        out.push_str(&format!("{h:>8}"));
    }
    out.push('\n');
    for (prefix, what) in [
        ("test", "corpus re-embedded"),
        ("corrected", "corrected cache, no re-embed"),
    ] {
        if !s.values.contains_key(&format!("{prefix}_mrr_at_10")) {
            continue;
        }
        out.push_str(&format!("{what:<28}"));
        for (k, _) in METRICS {
            out.push_str(&format!("{:>8.1}", 100.0 * s.get(&format!("{prefix}_{k}"))));
        }
        out.push('\n');
    }
    if let Some(em) = s.values.get("test_exact_match") {
        out.push_str(&format!(
            "answers: exact match {:.1} %, answer NLL {:.3}\n",
            100.0 * em,
            s.get("test_answer_nll")
        ));
    }
    out.push_str("target-encoder forwards:");
    let subset = s.get("forwards_subset") > 0.0;
    for reason in LEDGER_REASONS {
        // The corrector's training subset is a setting few runs use: shown when used.
        if reason == "subset" && !subset {
            continue;
        }
        out.push_str(&format!(
            " {reason} {} ({:.1}s),",
            thousands(s.get(&format!("forwards_{reason}"))),
            s.get(&format!("seconds_{reason}"))
        ));
    }
    out.pop();
    let per_step = match subset {
        true => "touched or subset",
        false => "touched",
    };
    out.push_str(&format!(
        "\ntotal {}, without {per_step} targets {}; {:.1}s wall\n",
        thousands(s.get("forwards_total")),
        thousands(s.get("forwards_without_touched")),
        s.get("seconds")
    ));
    out
}

/// Runs grouped into arms: the label with a trailing `-seed<N>` or `-s<N>` removed.
pub fn arm_of(label: &str) -> String {
    for sep in ["-seed", "-s", "_seed"] {
        if let Some(i) = label.rfind(sep) {
            let tail = &label[i + sep.len()..];
            if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit()) {
                return label[..i].to_string();
            }
        }
    }
    label.to_string()
}

/// One arm: its runs' mean and sample standard deviation of each column.
#[derive(Debug, Clone)]
pub struct Arm {
    /// The arm's name.
    pub name: String,
    /// Number of runs (seeds).
    pub runs: usize,
    /// Mean of each column.
    pub mean: BTreeMap<String, f64>,
    /// Sample standard deviation of each column (0 for a single run).
    pub std: BTreeMap<String, f64>,
}

/// Groups runs into arms, in the order arms first appear.
pub fn arms(runs: &[RunSummary]) -> Vec<Arm> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<&RunSummary>> = BTreeMap::new();
    for r in runs {
        let a = arm_of(&r.label);
        if !groups.contains_key(&a) {
            order.push(a.clone());
        }
        groups.entry(a).or_default().push(r);
    }
    order
        .into_iter()
        .map(|name| {
            let members = &groups[&name];
            let keys: Vec<&String> = members[0].values.keys().collect();
            let (mut mean, mut std) = (BTreeMap::new(), BTreeMap::new());
            for k in keys {
                let xs: Vec<f64> = members.iter().map(|r| r.get(k)).collect();
                let m = xs.iter().sum::<f64>() / xs.len() as f64;
                let var = if xs.len() > 1 {
                    xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
                } else {
                    0.0
                };
                mean.insert(k.clone(), m);
                std.insert(k.clone(), var.sqrt());
            }
            Arm {
                name,
                runs: members.len(),
                mean,
                std,
            }
        })
        .collect()
}

/// The comparison table as Markdown: test metrics (mean ± std over seeds, in %), target
/// forwards by reason, the seconds spent on refreshes, and wall seconds.
pub fn compare_table(arms: &[Arm]) -> String {
    let answers = arms.iter().any(|a| a.mean.contains_key("test_exact_match"));
    let deploy = arms
        .iter()
        .any(|a| a.mean.contains_key("deploy_share_at_1"));
    let mut out = String::from("| arm | runs |");
    for (_, h) in METRICS {
        out.push_str(&format!(" {h} |"));
    }
    if answers {
        out.push_str(" EM | answer NLL |");
    }
    out.push_str(
        " refresh fwd | refresh s | touched fwd | subset fwd | eval fwd | total fwd | seconds |",
    );
    if deploy {
        out.push_str(" h(B) R@1, % of re-embedded | h(B) R@20, % of re-embedded |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(METRICS.len() + 7 + 2 * answers as usize + 2 * deploy as usize));
    out.push('\n');
    for a in arms {
        let m = |k: &str| a.mean.get(k).copied().unwrap_or(f64::NAN);
        let s = |k: &str| a.std.get(k).copied().unwrap_or(0.0);
        out.push_str(&format!("| {} | {} |", a.name, a.runs));
        for (k, _) in METRICS {
            let key = format!("test_{k}");
            out.push_str(&format!(
                " {:.1} ± {:.1} |",
                100.0 * m(&key),
                100.0 * s(&key)
            ));
        }
        if answers {
            out.push_str(&format!(
                " {:.1} ± {:.1} | {:.3} ± {:.3} |",
                100.0 * m("test_exact_match"),
                100.0 * s("test_exact_match"),
                m("test_answer_nll"),
                s("test_answer_nll")
            ));
        }
        out.push_str(&format!(" {} |", thousands(m("forwards_refresh"))));
        out.push_str(&format!(" {:.0} |", m("seconds_refresh")));
        // Runs from before the training subset have no `forwards_subset`: none.
        let subset = a.mean.get("forwards_subset").copied().unwrap_or(0.0);
        for v in [
            m("forwards_touched"),
            subset,
            m("forwards_eval"),
            m("forwards_total"),
        ] {
            out.push_str(&format!(" {} |", thousands(v)));
        }
        out.push_str(&format!(" {:.0} ± {:.0} |", m("seconds"), s("seconds")));
        if deploy {
            for k in DEPLOY_AT {
                let key = format!("deploy_share_at_{k}");
                match a.mean.get(&key) {
                    Some(v) => {
                        out.push_str(&format!(" {:.1} ± {:.1} |", 100.0 * v, 100.0 * s(&key)))
                    }
                    None => out.push_str(" |"),
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The comparison as Arrow: one row per arm, `arm`, `runs`, then `<column>_mean` and
/// `<column>_std` for every numeric summary column.
pub fn compare_batch(arms: &[Arm]) -> Result<RecordBatch> {
    let keys: Vec<String> = arms
        .first()
        .map(|a| a.mean.keys().cloned().collect())
        .unwrap_or_default();
    let mut fields = vec![
        Field::new("arm", DataType::Utf8, false),
        Field::new("runs", DataType::UInt64, false),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            arms.iter().map(|a| a.name.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            arms.iter().map(|a| a.runs as u64),
        )),
    ];
    for k in &keys {
        for (suffix, pick) in [("mean", true), ("std", false)] {
            fields.push(Field::new(format!("{k}_{suffix}"), DataType::Float64, true));
            cols.push(Arc::new(Float64Array::from_iter(arms.iter().map(|a| {
                let m = if pick { &a.mean } else { &a.std };
                m.get(k).copied()
            }))));
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// The dev Recall@20 of a run at each step it evaluated, from `dir/metrics.parquet`.
fn dev_curve(dir: &Path) -> Result<Vec<(f64, f64)>> {
    let path = dir.join("metrics.parquet");
    let mut points = Vec::new();
    for b in parquet_io::read_all(&path)? {
        let (Some(step), Some(dev)) = (
            b.column_by_name("step")
                .and_then(|c| c.as_primitive_opt::<UInt64Type>()),
            b.column_by_name("dev_recall_at_20")
                .and_then(|c| c.as_primitive_opt::<Float64Type>()),
        ) else {
            return Err(Error::data(
                &path,
                None,
                "no `step` or `dev_recall_at_20` column",
            ));
        };
        for i in (0..b.num_rows()).filter(|&i| dev.is_valid(i)) {
            points.push((step.value(i) as f64, 100.0 * dev.value(i)));
        }
    }
    Ok(points)
}

/// Each arm's dev curve: the mean over its runs at each step any of them evaluated.
fn arm_curves(dirs: &[PathBuf], runs: &[RunSummary]) -> Result<Vec<plot::Curve>> {
    let mut order: Vec<String> = Vec::new();
    let mut sums: BTreeMap<String, BTreeMap<u64, (f64, usize)>> = BTreeMap::new();
    for (dir, run) in dirs.iter().zip(runs) {
        let arm = arm_of(&run.label);
        if !sums.contains_key(&arm) {
            order.push(arm.clone());
        }
        let by_step = sums.entry(arm).or_default();
        for (step, v) in dev_curve(dir)? {
            let e = by_step.entry(step as u64).or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        }
    }
    Ok(order
        .into_iter()
        .map(|arm| {
            let points = sums[&arm]
                .iter()
                .map(|(&s, &(sum, n))| (s as f64, sum / n as f64))
                .collect();
            (arm, points)
        })
        .collect())
}

/// `freshen compare`: loads the runs, prints the table, writes Parquet (and, when asked,
/// the cost plot and the dev curves).
pub fn compare(
    dirs: &[PathBuf],
    out: &Path,
    plot_path: Option<&Path>,
    curves_path: Option<&Path>,
) -> Result<String> {
    let runs = dirs
        .iter()
        .map(|d| RunSummary::load(d))
        .collect::<Result<Vec<_>>>()?;
    let arms = arms(&runs);
    let batch = compare_batch(&arms)?;
    let mut w = AtomicParquetWriter::create(out, batch.schema())?;
    w.write(&batch)?;
    w.finish()?.commit()?;
    if let Some(p) = plot_path {
        plot(&arms, p)?;
    }
    if let Some(p) = curves_path {
        curves(&arm_curves(dirs, &runs)?, p)?;
    }
    Ok(compare_table(&arms))
}
