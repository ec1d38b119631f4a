//! The sharded cache: one worker, two worker threads and two processes over loopback
//! choose the same negatives at every step, end with the same metrics, and the summary's
//! ledger sums every process's forwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, UInt64Type};

use crate::common::*;
use crate::train::{dataset, pipeline};

/// The settings every run here shares, as `--set` arguments.
fn settings(work: &Path, out: &Path) -> Vec<String> {
    let mut args = Vec::new();
    for kv in [
        format!("vars.data={}", work.join("data").display()),
        format!("vars.out={}", out.display()),
        format!("nodes.cache.path={}-cache", out.display()),
        "nodes.pairs.batch_size=8".into(),
        "nodes.pairs.steps=6".into(),
        "nodes.negatives.k=3".into(),
        "nodes.evaluate.every=3".into(),
        "nodes.corrected.apply_every=2".into(),
        // The margin filter cuts at `positive − margin`: after a few steps the workers'
        // gradient sums (added in another order) move a score across that cut in the
        // last bits. Without it the decisions are ranks, and ranks here have gaps.
        "nodes.negatives.margin=null".into(),
    ] {
        args.push("--set".to_string());
        args.push(kv);
    }
    args
}

/// Runs the tiny training pipeline with `extra` arguments; `procs` > 1 runs that many
/// processes over loopback at once. Returns the output folder.
fn run(work: &Path, name: &str, extra: &[&str], procs: usize) -> PathBuf {
    let yaml = pipeline(work).display().to_string();
    let out = work.join(name);
    let mut args: Vec<String> = vec!["run".into(), yaml];
    args.extend(settings(work, &out));
    args.extend(extra.iter().map(|s| s.to_string()));
    if procs == 1 {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = freshen(&refs);
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{name}: {stdout}{stderr}");
        return out;
    }
    let base = 24000 + (std::process::id() % 15000) as u16;
    let hosts = work.join(format!("{name}-hosts"));
    let lines: String = (0..procs)
        .map(|p| format!("127.0.0.1:{}\n", base + p as u16))
        .collect();
    std::fs::write(&hosts, lines).unwrap();
    let children: Vec<_> = (0..procs)
        .map(|p| {
            let mut a = args.clone();
            a.extend([
                "-n".into(),
                procs.to_string(),
                "-p".into(),
                p.to_string(),
                "--hostfile".into(),
                hosts.display().to_string(),
            ]);
            Command::new(env!("CARGO_BIN_EXE_freshen"))
                .args(a)
                .current_dir(root())
                .env_remove("FRESHEN_LOG")
                .output_spawn()
        })
        .collect();
    for (p, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{name} process {p}: {:?}", text(&o));
    }
    out
}

trait SpawnQuiet {
    fn output_spawn(&mut self) -> std::process::Child;
}

impl SpawnQuiet for Command {
    fn output_spawn(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Each (step, query)'s positive and negatives.
fn negatives(out: &Path) -> BTreeMap<(u64, String), (String, Vec<String>)> {
    let mut m = BTreeMap::new();
    for b in freshen::store::parquet_io::read_all(&out.join("negatives.parquet")).unwrap() {
        let step = b
            .column_by_name("step")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let ids = freshen::store::batch::strings(&b, "id").unwrap();
        let pos = freshen::store::batch::strings(&b, "corpus_id").unwrap();
        let negs = freshen::store::pairs::string_lists(&b, "negatives").unwrap();
        for (r, n) in negs.into_iter().enumerate() {
            let key = (step.value(r), ids.value(r).to_string());
            m.insert(key, (pos.value(r).to_string(), n));
        }
    }
    m
}

/// The summary's columns whose names contain one of `parts`, by name.
fn summary_values(out: &Path, parts: &[&str]) -> BTreeMap<String, f64> {
    let b = &freshen::store::parquet_io::read_all(&out.join("summary.parquet")).unwrap()[0];
    let mut m = BTreeMap::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if !parts.iter().any(|p| f.name().contains(p)) || f.name().contains("seconds") {
            continue;
        }
        let v = match c.data_type() {
            arrow::datatypes::DataType::UInt64 => c.as_primitive::<UInt64Type>().value(0) as f64,
            arrow::datatypes::DataType::Float64 => c.as_primitive::<Float64Type>().value(0),
            _ => continue,
        };
        m.insert(f.name().clone(), v);
    }
    m
}

#[test]
fn one_worker_two_workers_and_two_processes_choose_the_same_negatives() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    dataset(&work.join("data"), 120);
    let one = run(work, "one", &[], 1);
    let two = run(work, "two", &["-w", "2"], 1);
    let procs = run(work, "procs", &[], 2);
    let n1 = negatives(&one);
    assert_eq!(n1.len(), 6 * 8, "one row per query and step");
    assert_eq!(n1, negatives(&two), "two workers chose other negatives");
    assert_eq!(n1, negatives(&procs), "two processes chose other negatives");

    // Metrics: the same rankings, up to float summation order in the gradients' sum
    // (one worker sums a batch; two sum halves then add them): within 1e-9.
    let metrics = ["test_", "corrected_", "best_value"];
    let m1 = summary_values(&one, &metrics);
    assert!(m1.len() > 10, "{m1:?}");
    for other in [&two, &procs] {
        for (k, v) in summary_values(other, &metrics) {
            assert!((v - m1[&k]).abs() <= 1e-9, "{k}: {v} against {}", m1[&k]);
        }
    }

    // The ledger: two processes count exactly what two worker threads count (each worker
    // embeds the targets its queries touch), so process 1's forwards reached the summary;
    // the corpus-wide counts (initial, eval) are one worker's.
    let l1 = summary_values(&one, &["forwards_"]);
    let l2 = summary_values(&two, &["forwards_"]);
    assert_eq!(l2, summary_values(&procs, &["forwards_"]));
    for reason in ["forwards_initial", "forwards_eval", "forwards_refresh"] {
        assert_eq!(l1[reason], l2[reason], "{reason}");
    }
    assert!(l2["forwards_touched"] >= l1["forwards_touched"]);

    // Memory: each worker holds its shard, about N/W rows, the same rows whether the
    // workers are threads or processes; peak memory comes from every process.
    assert_eq!(summary_list(&one, "shard_rows"), vec![120]);
    let rows = summary_list(&two, "shard_rows");
    assert_eq!(rows.iter().sum::<u64>(), 120, "{rows:?}");
    assert!(rows.iter().all(|&r| (40..=80).contains(&r)), "{rows:?}");
    assert_eq!(summary_list(&procs, "shard_rows"), rows);
    assert_eq!(summary_list(&two, "held_bytes").len(), 2);
    let peaks = summary_list(&procs, "peak_bytes");
    assert_eq!(peaks.len(), 2, "{peaks:?}");
    assert!(peaks.iter().all(|&p| p > 1 << 20), "{peaks:?}");
    assert_eq!(summary_list(&two, "peak_bytes").len(), 1);
}

/// The summary's list column `name`.
fn summary_list(out: &Path, name: &str) -> Vec<u64> {
    let b = &freshen::store::parquet_io::read_all(&out.join("summary.parquet")).unwrap()[0];
    let list = b.column_by_name(name).unwrap().as_list::<i32>().value(0);
    list.as_primitive::<UInt64Type>().values().to_vec()
}

/// The corrector's training subset: exactly `m` more target forwards a step, under their
/// own reason, for one worker and for two; none when the corrector does not train.
#[test]
fn the_training_subset_embeds_exactly_m_targets_a_step_for_any_worker_count() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    dataset(&work.join("data"), 120);
    let subset = ["--set", "nodes.negatives.subset=5"];
    let one = run(work, "one", &subset, 1);
    let two = run(work, "two", &[&subset[..], &["-w", "2"]].concat(), 1);
    for out in [&one, &two] {
        let l = summary_values(out, &["forwards_"]);
        assert_eq!(l["forwards_subset"], 5.0 * 6.0, "{out:?}: {l:?}");
        // The totals without per-step targets leave the subset out with the touched.
        assert_eq!(
            l["forwards_without_touched"],
            l["forwards_total"] - l["forwards_touched"] - l["forwards_subset"]
        );
    }
    let frozen = run(
        work,
        "frozen",
        &[&subset[..], &["--set", "models.h.frozen=true"]].concat(),
        1,
    );
    assert_eq!(
        summary_values(&frozen, &["forwards_subset"])["forwards_subset"],
        0.0
    );
}
