//! An estimate of a run's peak memory from its plan, checked before anything runs.
//!
//! Every model (weights, and for a trained one its gradients and AdamW moments, per
//! worker) and every node (the copies of the cache it holds, the score blocks of its
//! searches, the candidate tensors of a loss) states what it needs through
//! [`NodeKind::memory`](super::NodeKind::memory); the sum is compared with what the
//! machine has available (or `--max-memory`). A run that would be killed by the kernel
//! halfway (and take other jobs with it) is refused with the estimate and the setting to
//! change. The estimate is meant to be right within a factor of about two: it counts the
//! large tensors, not every allocation.

use super::kind::{CheckCx, Cost, Per};
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

/// Every cost of the graph for the leader's process of a run over `processes` processes
/// of `workers` workers each (the leader's is the largest: it also holds the evaluation).
/// A per-worker cost counts `workers` times, a sharded one the process's share of the
/// shards (`1/processes`), a leader's once.
pub fn costs(g: &Graph, workers: usize, processes: usize) -> Vec<(Option<usize>, Cost)> {
    let w = workers.max(1) as f64;
    let p = processes.max(1) as f64;
    let mut out = Vec::new();
    let trained = g
        .training
        .as_ref()
        .map(|t| t.trained.clone())
        .unwrap_or_default();
    for (name, m) in &g.models {
        let dim = corrector_width(g, name);
        let params = m.parameters(dim).unwrap_or(0) as f64;
        // Weights; a trained model also holds gradients and two AdamW moments, and the
        // training eval keeps a copy of the best step's weights.
        let copies = match trained.contains(name) {
            true => 5.0,
            false => 1.0,
        };
        out.push((
            None,
            Cost {
                what: format!(
                    "model {name}: {params:.0} parameters × {copies} copies × {w} workers"
                ),
                bytes: params * F32 * copies * w,
                at: Some(format!("models.{name}")),
                per: Per::Worker,
            },
        ));
    }
    for i in 0..g.nodes().len() {
        let cx = CheckCx { graph: g, node: i };
        for mut c in g.nodes()[i].kind.memory(&cx) {
            c.bytes *= match c.per {
                Per::Worker => w,
                Per::Shard => 1.0 / p,
                Per::Leader => 1.0,
            };
            out.push((Some(i), c));
        }
    }
    out
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

/// The estimated peak in bytes: the sum of [`costs`].
pub fn estimate(g: &Graph, workers: usize, processes: usize) -> f64 {
    // A fold from +0 (an empty f64 `sum` is -0).
    costs(g, workers, processes)
        .iter()
        .fold(0.0, |a, (_, c)| a + c.bytes)
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
