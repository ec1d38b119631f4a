//! An estimate of a run's peak memory from its plan, checked before anything runs.
//!
//! The process itself ([`PROCESS`]); every model (its weights, and for a trained one its
//! gradients, AdamW moments and the best step's copy, per worker; and what one model at a
//! time adds: its weight file while it loads, an inference batch, a training step's
//! temporaries, a checkpoint of it, each stated by [`ModelKind::footprint`]); and every
//! node (the tables of a source, the copies of the cache it holds, the score blocks of
//! its searches, the candidate tensors of a loss, the tapes of a training forward) state
//! what they need through [`NodeKind::memory`](super::NodeKind::memory), each with the
//! [`Phase`] it is held in. The estimate is what is held for the run plus the largest
//! phase; it is compared with what the machine has available (or `--max-memory`). A run
//! that would be killed by the kernel halfway (and take other jobs with it) is refused
//! with the estimate and the setting to change. It is meant not to under-count:
//! `benches/memory.sh` measures it against each shipped pipeline's peak.
//!
//! [`ModelKind::footprint`]: crate::models::ModelKind::footprint

use super::kind::{CheckCx, Cost, Per, Phase};
use super::Graph;
use crate::error::{Error, Result};
use crate::models::Role;

/// Bytes of an f32.
pub const F32: f64 = 4.0;

/// The machine's available memory in bytes (`MemAvailable` of `/proc/meminfo`), if known.
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `16G`, `900M`, `1.5T`, or a number of bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let factor = match unit.to_ascii_uppercase().trim_end_matches('B') {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => f64::NAN,
    };
    match num.trim().parse::<f64>() {
        Ok(n) if factor.is_finite() && n >= 0.0 => Ok((n * factor) as u64),
        _ => Err(Error::Usage(format!(
            "--max-memory {s}: not a size (expected e.g. 16G, 900M or a number of bytes)"
        ))),
    }
}

/// `1.5 GB`.
pub fn shown(bytes: f64) -> String {
    const G: f64 = 1024.0 * 1024.0 * 1024.0;
    match bytes >= G {
        true => format!("{:.1} GB", bytes / G),
        false => format!("{:.0} MB", bytes / (1024.0 * 1024.0)),
    }
}

/// The process before the pipeline allocates: the binary's code and data, the
/// allocator's own pages, timely's and rayon's threads with their stacks, the parsed
/// pipeline (what a run of the synthetic pipeline, which allocates next to nothing, holds).
pub const PROCESS: f64 = 48.0 * MIB;

/// Tensors the size of a model's largest trained one (with a dense gradient) that its
/// training step holds at a time beyond the gradients: the backward's zero tensor and sum
/// for a table's lookup and the gradient's sums over the step's forwards, and AdamW's
/// update (each moment's new value beside the old, and the terms of the step).
pub const STEP_TEMPORARIES: f64 = 9.0;

/// Bytes in a MiB.
const MIB: f64 = 1024.0 * 1024.0;

/// Every cost of the graph for the leader's process of a run over `processes` processes
/// of `workers` workers each (the leader's is the largest: it also holds the evaluation).
/// A per-worker cost counts `workers` times, a sharded one the process's share of the
/// shards (`1/processes`), a leader's once.
pub fn costs(g: &Graph, workers: usize, processes: usize) -> Vec<(Option<usize>, Cost)> {
    let w = workers.max(1) as f64;
    let p = processes.max(1) as f64;
    let mut out = vec![(
        None,
        Cost {
            what: "the process: the binary, the allocator's pages, timely's and rayon's threads"
                .into(),
            bytes: PROCESS,
            per: Per::Leader,
            ..Cost::default()
        },
    )];
    out.extend(model_costs(g).into_iter().map(|c| (None, c)));
    for i in 0..g.nodes().len() {
        let cx = CheckCx { graph: g, node: i };
        out.extend(
            g.nodes()[i]
                .kind
                .memory(&cx)
                .into_iter()
                .map(|c| (Some(i), c)),
        );
    }
    for (_, c) in &mut out {
        c.bytes *= match c.per {
            Per::Worker => w,
            Per::Shard => 1.0 / p,
            Per::Leader => 1.0,
        };
    }
    out
}

/// The models of `models:`: each one's weights, and for a trained one its gradients,
/// AdamW moments and the best step's copy (per worker); then what one model at a time
/// needs: loading, an inference batch, a training step's temporaries, a checkpoint.
fn model_costs(g: &Graph) -> Vec<Cost> {
    let trained = g
        .training
        .as_ref()
        .map(|t| t.trained.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut largest = [None::<Cost>, None, None, None];
    for (name, m) in &g.models {
        let Some(f) = m.footprint(corrector_width(g, name)) else {
            continue;
        };
        let at = Some(format!("models.{name}"));
        let cost = |what: String, bytes: f64, per: Per, phase: Phase| Cost {
            what: format!("model {name}: {what}"),
            bytes,
            at: at.clone(),
            per,
            phase,
        };
        out.push(cost(
            "its weights".into(),
            f.weights,
            Per::Worker,
            Phase::Run,
        ));
        let mut once = vec![
            cost(
                "loading, its weight file read whole".into(),
                f.load,
                Per::Leader,
                Phase::Run,
            ),
            cost(
                "an inference batch".into(),
                f.encode,
                Per::Worker,
                Phase::Encode,
            ),
        ];
        if trained.contains(name) {
            out.push(cost(
                "its gradients, two AdamW moments and the best step's copy".into(),
                f.dense_gradient + 3.0 * f.trained,
                Per::Worker,
                Phase::Run,
            ));
            once.extend(training_transients(&f, &cost));
        }
        for (slot, c) in largest.iter_mut().zip(once) {
            if slot.as_ref().is_none_or(|s| s.bytes < c.bytes) {
                *slot = Some(c);
            }
        }
    }
    out.extend(largest.into_iter().flatten().filter(|c| c.bytes > 0.0));
    out
}

/// What a trained model adds for a while, one model at a time: its training step's
/// temporaries, and a checkpoint of it (the weights copied, and converted one tensor at a
/// time; the moments copied; the scan for their touched rows, three tensors of the
/// largest).
fn training_transients(
    f: &crate::models::Footprint,
    cost: &dyn Fn(String, f64, Per, Phase) -> Cost,
) -> [Cost; 2] {
    [
        cost(
            format!("a training step's temporaries, {STEP_TEMPORARIES} × its largest tensor"),
            STEP_TEMPORARIES * f.largest_dense,
            Per::Worker,
            Phase::Step,
        ),
        cost(
            "a checkpoint: its trained weights and moments copied, 4 × its largest tensor".into(),
            3.0 * f.trained + 4.0 * f.largest,
            Per::Leader,
            Phase::Checkpoint,
        ),
    ]
}

/// The width of the cache a corrector corrects (0 for other models or when unknown).
fn corrector_width(g: &Graph, name: &str) -> usize {
    for (i, n) in g.nodes().iter().enumerate() {
        if n.kind
            .references()
            .models
            .iter()
            .any(|(_, m, r)| m == name && *r == Role::Corrector)
        {
            return CheckCx { graph: g, node: i }.input_dim(0);
        }
    }
    0
}

/// The estimated peak in bytes: what is held for the run, plus the largest phase (see
/// [`Phase`]).
pub fn estimate(g: &Graph, workers: usize, processes: usize) -> f64 {
    peak(costs(g, workers, processes).iter().map(|(_, c)| c))
}

/// The sum of the [`Phase::Run`] costs plus the largest of the other phases' sums.
pub fn peak<'a>(costs: impl Iterator<Item = &'a Cost>) -> f64 {
    let mut phases = std::collections::BTreeMap::<Phase, f64>::new();
    for c in costs {
        *phases.entry(c.phase).or_insert(0.0) += c.bytes;
    }
    let held = phases.remove(&Phase::Run).unwrap_or(0.0);
    // Folds from +0 (an empty f64 `sum` is -0).
    held + phases.values().fold(0.0_f64, |a, &b| a.max(b))
}

/// Refuses a plan estimated to need more than `max` bytes (default: what is available).
pub fn check(g: &Graph, workers: usize, processes: usize, max: Option<u64>) -> Result<()> {
    let (limit, given) = match max {
        Some(m) => (m, true),
        None => match available() {
            Some(a) => (a, false),
            None => return Ok(()),
        },
    };
    let costs = costs(g, workers, processes);
    let total = estimate(g, workers, processes);
    if total <= limit as f64 {
        return Ok(());
    }
    let Some((node, worst)) = costs.iter().max_by(|a, b| a.1.bytes.total_cmp(&b.1.bytes)) else {
        return Ok(());
    };
    let message = format!(
        "the run would need about {} of memory, more than the {} {} (the most: {} = {}; lower the setting here, or pass --max-memory to change the limit)",
        shown(total),
        shown(limit as f64),
        if given { "allowed" } else { "this machine has available" },
        worst.what,
        shown(worst.bytes)
    );
    let node = node.map(|i| g.nodes()[i].id.as_str());
    Err(match &worst.at {
        Some(at) => g.spec.error(at, node, message),
        None => Error::Usage(message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(bytes: f64, phase: Phase) -> Cost {
        Cost {
            bytes,
            phase,
            ..Cost::default()
        }
    }

    fn quickstart(sets: &[&str]) -> Graph {
        let file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/quickstart.yaml");
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        crate::nodes::load(&file, &sets).unwrap()
    }

    /// The bytes of the costs whose description contains `what`.
    fn of(costs: &[(Option<usize>, Cost)], what: &str) -> f64 {
        costs
            .iter()
            .filter(|(_, c)| c.what.contains(what))
            .map(|(_, c)| c.bytes)
            .sum()
    }

    #[test]
    fn the_peak_is_what_is_held_plus_the_largest_phase() {
        let costs = [
            cost(10.0, Phase::Run),
            cost(5.0, Phase::Run),
            cost(7.0, Phase::Step),
            cost(6.0, Phase::Step),
            cost(12.0, Phase::Checkpoint),
            cost(1.0, Phase::Encode),
        ];
        assert_eq!(peak(costs.iter()), 15.0 + 13.0);
        assert_eq!(peak([cost(3.0, Phase::Step)].iter()), 3.0);
        assert!(peak([].iter()).is_sign_positive());
    }

    #[test]
    fn a_trained_hashed_tower_holds_its_moments_and_best_copy_and_a_checkpoint_copies_it() {
        let g = quickstart(&[]);
        let costs = costs(&g, 1, 1);
        let table = ((1 << 18) * 256) as f64 * F32;
        let projection = (256 * 128 + 128) as f64 * F32;
        // The table trains by rows: no dense gradient of it.
        let state = of(&costs, "model g: its gradients");
        assert_eq!(state, 3.0 * (table + projection) + projection);
        // One checkpoint at a time, of the largest model: 3 copies of it and 4 of its table.
        assert_eq!(
            of(&costs, "a checkpoint"),
            3.0 * (table + projection) + 4.0 * table
        );
        assert!(of(&costs, "the process") > 0.0);
        // The checkpoint is the largest phase: the estimate is the held costs plus it.
        let held = peak(
            costs
                .iter()
                .map(|(_, c)| c)
                .filter(|c| c.phase == Phase::Run),
        );
        assert_eq!(estimate(&g, 1, 1), held + of(&costs, "a checkpoint"));
    }

    #[test]
    fn frozen_towers_hold_their_weights_only() {
        let trained = estimate(&quickstart(&[]), 1, 1);
        let frozen = quickstart(&["models.f.frozen=true", "models.g.frozen=true"]);
        let costs = costs(&frozen, 1, 1);
        assert_eq!(of(&costs, "model f: its gradients"), 0.0);
        assert_eq!(of(&costs, "model f: a checkpoint"), 0.0);
        assert!(estimate(&frozen, 1, 1) < trained / 2.0);
    }

    #[test]
    fn workers_multiply_a_step_and_the_leader_writes_one_checkpoint() {
        let g = quickstart(&[]);
        let (one, two) = (costs(&g, 1, 1), costs(&g, 2, 1));
        assert_eq!(of(&two, "a checkpoint"), of(&one, "a checkpoint"));
        assert_eq!(of(&two, "node loss"), 2.0 * of(&one, "node loss"));
        assert_eq!(
            of(&two, "model g: its weights"),
            2.0 * of(&one, "model g: its weights")
        );
    }
}
