//! Resumable checkpoints: where they are, what they record of the run, and whether a run
//! may continue from one.
//!
//! A run's checkpoints live in `<out>/.freshen/resume/step-NNNNNN/`, one folder per step
//! (written under a temporary name and renamed, so a folder that exists is complete; the
//! last two are kept). `freshen run --resume` continues from the latest, after checking
//! that the pipeline's settings (outputs and checkpoint settings aside) and its input
//! files are those of the run that wrote it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dataflow::checkpoint::{load_json, load_tensors};
use crate::dataflow::{NodeStats, ResumePoint, RunState};
use crate::error::{Error, Result};
use crate::graph::paths;
use crate::graph::{Access, Graph};
use crate::models::Built;
use freshen_operators::train::Trainable;

/// Checkpoints kept in a run's folder (the newest ones).
pub const KEEP: usize = 2;

/// The folder of a run's checkpoints.
pub fn folder(run_dir: &Path) -> PathBuf {
    run_dir.join(".freshen").join("resume")
}

/// The folder of the checkpoint taken before step `step`.
pub fn step_dir(run_dir: &Path, step: usize) -> PathBuf {
    folder(run_dir).join(format!("step-{step:06}"))
}

/// An input file as the run saw it: a changed file means a different run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its modification time, in seconds since the epoch.
    pub modified: u64,
}

/// What a checkpoint records of the run beside the models and the nodes' states.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The first step a run resumed from it trains.
    pub step: usize,
    /// The run's steps.
    pub steps: usize,
    /// Its workers over all processes (each trains on its share of a step's batch, so
    /// another count is another run).
    pub workers: usize,
    /// The settings that decide the numbers ([`comparable`]).
    pub settings: Value,
    /// The input files.
    pub inputs: Vec<InputFile>,
    /// Target-encoder forwards and seconds by reason so far.
    pub ledger: BTreeMap<String, (u64, f64)>,
    /// Every node's counters so far.
    pub stats: BTreeMap<String, NodeStats>,
    /// Seconds of the run so far.
    pub seconds: f64,
}

/// The settings of `graph` that decide its numbers: everything but where outputs go and
/// when checkpoints are written.
pub fn comparable(graph: &Graph) -> Value {
    let mut v = graph.settings_json();
    if let Some(o) = v.as_object_mut() {
        for key in ["outputs", "name", "description", "vars"] {
            o.remove(key);
        }
        if let Some(Value::Array(nodes)) = o.get_mut("nodes") {
            for n in nodes.iter_mut().filter_map(Value::as_object_mut) {
                for key in [
                    "trec",
                    "rankings",
                    "checkpoint",
                    "embeddings",
                    "resume_every",
                    "resume_minutes",
                ] {
                    n.remove(key);
                }
            }
        }
    }
    v
}

/// The input files of `graph`, as they are now.
pub fn input_files(graph: &Graph) -> Vec<InputFile> {
    let mut out: Vec<InputFile> = paths::uses(graph)
        .into_iter()
        .filter(|(_, f)| f.access == Access::Read)
        .filter_map(|(_, f)| {
            let meta = std::fs::metadata(&f.path).ok()?;
            let modified = meta
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs();
            Some(InputFile {
                path: paths::absolute(&f.path),
                bytes: meta.len(),
                modified,
            })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup();
    out
}

/// The newest complete checkpoint of the run in `run_dir`: its step and folder.
pub fn latest(run_dir: &Path) -> Option<(usize, PathBuf)> {
    let entries = std::fs::read_dir(folder(run_dir)).ok()?;
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse::<usize>().ok()?;
            Some((step, e.path()))
        })
        .max_by_key(|(s, _)| *s)
}

/// Deletes every checkpoint but those of `keep` (steps).
pub fn prune(run_dir: &Path, keep: &[usize]) {
    let Ok(entries) = std::fs::read_dir(folder(run_dir)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let step = name.strip_prefix("step-").and_then(|s| s.parse().ok());
        if step.is_some_and(|s| !keep.contains(&s)) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// After a run's outputs are committed its checkpoints have nothing left to resume:
/// they go (a folder of them can be gigabytes).
pub fn finished(run_dir: &Path) {
    let dir = folder(run_dir);
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(folder = %dir.display(), error = %e, "could not remove the finished run's checkpoints");
        }
    }
}

/// Warns, for a run without `--resume`, that an interrupted run's checkpoint is there
/// (kept until this run writes its first).
pub fn warn_interrupted(run_dir: &Path) {
    if let Some((step, dir)) = latest(run_dir) {
        tracing::warn!(
            step,
            checkpoint = %dir.display(),
            "an interrupted run left a checkpoint; this run starts over (pass --resume to continue it)"
        );
    }
}

/// The checkpoint a `--resume` run continues from, checked against this run: `None`
/// when the folder has none (the run starts from step 0). A checkpoint of a run with
/// other settings or other input files is refused, naming the first difference.
pub fn open(
    graph: &Graph,
    run_dir: &Path,
    workers: usize,
) -> Result<Option<(ResumePoint, RunRecord)>> {
    let Some((step, dir)) = latest(run_dir) else {
        tracing::warn!(
            folder = %folder(run_dir).display(),
            "--resume: no checkpoint yet, starting from step 0"
        );
        return Ok(None);
    };
    let path = dir.join("run.json");
    let record: RunRecord = serde_json::from_value(load_json(&path)?)
        .map_err(|e| Error::data(&path, None, format!("unreadable checkpoint ({e})")))?;
    let refuse = |what: String| {
        Error::Usage(format!(
            "cannot resume from {}: {what} (expected the run that wrote it; run without --resume to start over)",
            dir.display()
        ))
    };
    if record.workers != workers {
        return Err(refuse(format!(
            "it ran on {} workers and this run has {workers} (one worker's share of each batch decides the numbers; resume with as many)",
            record.workers
        )));
    }
    if let Some((at, was, now)) = first_difference(&record.settings, &comparable(graph), "") {
        return Err(refuse(format!("`{at}` was {was} and is now {now}")));
    }
    let inputs = input_files(graph);
    if record.inputs != inputs {
        let changed = inputs
            .iter()
            .find(|f| !record.inputs.contains(f))
            .or_else(|| record.inputs.iter().find(|f| !inputs.contains(f)))
            .map_or_else(|| "an input".to_string(), |f| f.path.display().to_string());
        return Err(refuse(format!("{changed} changed since")));
    }
    tracing::info!(step, checkpoint = %dir.display(), "resuming");
    Ok(Some((ResumePoint { step, dir }, record)))
}

/// The first place where `a` and `b` differ: its path (list items by `id` when they
/// have one), and the two values.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<(String, String, String)> {
    let join = |k: &str| match at.is_empty() {
        true => k.to_string(),
        false => format!("{at}.{k}"),
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, &join(k)),
                (p, q) => Some((join(k), shown(p), shown(q))),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| {
                let key = p
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| i.to_string(), str::to_string);
                first_difference(p, q, &join(&key))
            })
        }
        _ if a == b => None,
        _ => Some((at.to_string(), a.to_string(), b.to_string())),
    }
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "absent".to_string(), Value::to_string)
}

/// Sets a model's weights to the checkpoint's (before it is replicated to the workers).
pub fn restore_model(point: &ResumePoint, name: &str, model: &Built) -> Result<()> {
    let path = point.dir.join("models").join(format!("{name}.safetensors"));
    let params = match model {
        Built::Encoder(e) => e.params(),
        Built::Corrector(c) => c.params(),
        Built::Reader(r) => r.params(),
    };
    let device = params
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or_else(freshen_operators::device::cpu);
    let saved = load_tensors(&path, &device)?;
    for (param, var) in params {
        let value = saved.get(&param).ok_or_else(|| {
            Error::data(
                &path,
                None,
                format!("the checkpoint lacks `{param}` of model {name}"),
            )
        })?;
        var.set(value)?;
    }
    Ok(())
}

/// Continues `run`'s ledger and seconds from the checkpoint's (its node counters count
/// this run's work: the sources send again what the resumed steps need).
pub fn restore_counters(run: &RunState, record: &RunRecord) {
    run.resume_from(record.ledger.clone(), BTreeMap::new(), record.seconds);
}
