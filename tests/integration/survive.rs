//! Runs that survive: a run killed with `kill -9` resumes to the numbers of an
//! uninterrupted one; outputs are committed together or not at all; a second run on a
//! folder in use is refused and creates nothing; what dead runs left is swept.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;
use crate::train::{dataset, pipeline};

/// The tiny training run of these tests: 12 steps, checkpoints every 3 (where the
/// corrector is applied), writing into `out`.
fn args(work: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let data = work.join("data");
    if !data.exists() {
        dataset(&data, 120);
    }
    let yaml = pipeline(work);
    let mut a: Vec<String> = vec!["run".into(), yaml.display().to_string()];
    let sets = [
        format!("vars.data={}", data.display()),
        format!("vars.out={}", out.display()),
        format!("nodes.cache.path={}-cache", out.display()),
        "nodes.pairs.batch_size=8".into(),
        "nodes.pairs.steps=12".into(),
        "nodes.negatives.k=3".into(),
        "nodes.evaluate.every=3".into(),
        "nodes.corrected.apply_every=3".into(),
        "nodes.update.resume_every=3".into(),
    ];
    for s in sets.iter().map(String::as_str).chain(extra.iter().copied()) {
        a.push("--set".into());
        a.push(s.to_string());
    }
    a
}

fn run(args: &[String], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_freshen"));
    c.args(args).current_dir(root()).env_remove("FRESHEN_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the freshen binary runs")
}

/// Every column of two runs' summary and metrics tables but the seconds, the settings, the
/// memory (peak and held bytes) and the host reads: properties of the processes, not of
/// the training (a resumed process batches its tables differently and reads its
/// checkpoint), as text, for comparing runs bit for bit (floats print exactly).
fn numbers(out: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for file in ["summary.parquet", "metrics.parquet"] {
        for b in freshen::store::parquet_io::read_all(&out.join(file)).unwrap() {
            for (i, f) in b.schema().fields().iter().enumerate() {
                let name = f.name();
                let process = name.ends_with("_bytes") || name == "host_reads";
                if name.contains("seconds") || name == "settings" || process {
                    continue;
                }
                let c = b.column(i);
                for r in 0..b.num_rows() {
                    let v = arrow::util::display::array_value_to_string(c, r).unwrap();
                    rows.push(format!("{file}.{name}[{r}]={v}"));
                }
            }
        }
    }
    rows
}

/// Asserts two runs' numbers are equal, naming the first difference.
fn same(a: &[String], b: &[String]) {
    assert_eq!(a.len(), b.len());
    if let Some((x, y)) = a.iter().zip(b).find(|(x, y)| x != y) {
        panic!("the runs differ: {x} against {y}");
    }
}

/// Starts the run and kills it (`SIGKILL`) once its log says `line`.
fn kill_at(args: &[String], env: &[(&str, &str)], line: &str) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_freshen"));
    c.args(args)
        .current_dir(root())
        .env_remove("FRESHEN_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for l in stderr.lines() {
        let l = l.unwrap();
        seen.push(l.clone());
        if l.contains(line) {
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
    }
    let status = child.wait().unwrap();
    panic!("the run ended ({status}) without logging `{line}`: {seen:?}");
}

#[test]
fn a_run_killed_at_a_step_resumes_to_the_uninterrupted_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let full = work.join("full");
    let o = run(&args(work, &full, &[]), &[]);
    assert!(o.status.success(), "{:?}", text(&o));

    // Killed after the checkpoint before step 6 (read from its log): nothing committed.
    let out = work.join("killed");
    kill_at(
        &args(work, &out, &[]),
        &[],
        "wrote a resumable checkpoint step=6",
    );
    assert!(!out.join("summary.parquet").exists());
    let checkpoints = contents(&out.join(".freshen/resume"));

    // A setting that changes the numbers refuses to resume, naming it; nothing changes.
    let changed = run(
        &[
            args(work, &out, &["nodes.loss.beta=10"]),
            vec!["--resume".into()],
        ]
        .concat(),
        &[],
    );
    let (_, stderr) = text(&changed);
    assert_eq!(changed.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`nodes.loss.beta` was 20.0 and is now 10.0"),
        "{stderr}"
    );
    assert_eq!(contents(&out.join(".freshen/resume")), checkpoints);

    let resumed = run(
        &[args(work, &out, &[]), vec!["--resume".into()]].concat(),
        &[],
    );
    let (stdout, stderr) = text(&resumed);
    assert!(resumed.status.success(), "{stdout}{stderr}");
    // The kill lands right after the line; a fast machine may have passed step 9.
    assert!(
        stderr.contains("resuming step=6") || stderr.contains("resuming step=9"),
        "{stderr}"
    );
    same(&numbers(&out), &numbers(&full));
}

#[test]
fn a_kill_while_a_checkpoint_is_written_leaves_the_previous_one_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let full = work.join("full");
    assert!(run(&args(work, &full, &[]), &[]).status.success());
    let out = work.join("torn");
    // The process dies (abort, as a kill) after the models of the step-9 checkpoint are
    // written and before it is complete.
    let o = run(
        &args(work, &out, &[]),
        &[("FRESHEN_CRASH_AT", "checkpoint-9")],
    );
    assert!(!o.status.success());
    let resume = out.join(".freshen/resume");
    let mut names: Vec<String> = std::fs::read_dir(&resume)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?} {:?}", text(&o));
    assert_eq!(&names[1..], ["step-000003", "step-000006"], "{names:?}");
    assert!(
        names[0].starts_with(".step-000009."),
        "the torn one is staged: {names:?}"
    );
    let resumed = run(
        &[args(work, &out, &[]), vec!["--resume".into()]].concat(),
        &[],
    );
    let (stdout, stderr) = text(&resumed);
    assert!(resumed.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("resuming step=6"), "{stderr}");
    same(&numbers(&out), &numbers(&full));
    assert!(!resume.exists(), "a finished run leaves no checkpoints");
}

#[test]
fn two_workers_resume_to_the_uninterrupted_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let two = |out: &Path| [args(work, out, &[]), vec!["-w".into(), "2".into()]].concat();
    let full = work.join("full");
    let o = run(&two(&full), &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    let out = work.join("killed");
    let o = run(&two(&out), &[("FRESHEN_CRASH_AT", "checkpoint-9")]);
    assert!(!o.status.success());
    let one = run(
        &[args(work, &out, &[]), vec!["--resume".into()]].concat(),
        &[],
    );
    let (_, stderr) = text(&one);
    assert_eq!(one.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ran on 2 workers and this run has 1"),
        "{stderr}"
    );
    let resumed = run(&[two(&out), vec!["--resume".into()]].concat(), &[]);
    let (stdout, stderr) = text(&resumed);
    assert!(resumed.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("resuming step=6"), "{stderr}");
    same(&numbers(&out), &numbers(&full));
}

/// Files of the out folder with their bytes (outputs and the checkpoint), sorted.
fn contents(out: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n == ".freshen") {
                continue;
            }
            match p.is_dir() {
                true => stack.push(p),
                false => files.push((p.clone(), std::fs::read(&p).unwrap())),
            }
        }
    }
    files.sort();
    files
}

/// What a reader sees: `current` resolved once, and every file of that version with its
/// bytes (outputs and the checkpoint).
fn view(out: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    match std::fs::read_link(out.join("current")) {
        Ok(version) => contents(&out.join(version)),
        Err(_) => Vec::new(),
    }
}

/// The seed in a version's summary settings, and its `run.trec`.
fn seed_and_run(version: &Path) -> Option<(u64, Vec<u8>)> {
    let summary = freshen::store::parquet_io::read_all(&version.join("summary.parquet")).ok()?;
    let settings = summary[0]
        .column_by_name("settings")?
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()?
        .value(0)
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&settings).ok()?;
    Some((
        v["seed"].as_u64()?,
        std::fs::read(version.join("run.trec")).ok()?,
    ))
}

/// A commit killed at each of its stages leaves readers the earlier run's outputs or the
/// new run's, never a mix, and the next run on the folder says which it did: rolled
/// back or completed. A reader polls the folder throughout, runs killed at random
/// moments included.
#[test]
fn a_run_killed_while_committing_leaves_one_runs_outputs_and_a_reader_never_sees_a_mix() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let out = work.join("out");
    let mut expected = std::collections::BTreeMap::new();
    for seed in [7u64, 8] {
        let o = run(&args(work, &out, &[&format!("seed={seed}")]), &[]);
        assert!(o.status.success(), "{:?}", text(&o));
        expected.insert(seed, std::fs::read(out.join("run.trec")).unwrap());
    }
    // seed 7's outputs again, then a reader polls while runs commit and die.
    assert!(run(&args(work, &out, &["seed=7"]), &[]).status.success());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dir, flag, want) = (out.clone(), stop.clone(), expected.clone());
    let reader = std::thread::spawn(move || {
        let mut seen = 0usize;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(v) = std::fs::read_link(dir.join("current")) else {
                continue;
            };
            if let Some((seed, trec)) = seed_and_run(&dir.join(v)) {
                assert_eq!(
                    Some(&trec),
                    want.get(&seed),
                    "run.trec of another run than seed {seed}"
                );
                seen += 1;
            }
        }
        seen
    });
    let before = view(&out);
    let o = run(
        &args(work, &out, &["seed=8"]),
        &[("FRESHEN_CRASH_AT", "commit")],
    );
    assert!(!o.status.success());
    assert_eq!(
        view(&out),
        before,
        "a kill before the switch changed what readers see"
    );
    // The next run on the folder rolls it back first (and dies right after, so that what
    // it found is what is left).
    let o = run(
        &args(work, &out, &["seed=8"]),
        &[("FRESHEN_CRASH_AT", "started")],
    );
    assert!(text(&o).1.contains("rolled back"), "{:?}", text(&o));
    assert_eq!(view(&out), before);
    // Killed with the new version complete, before the switch: readers still see the
    // earlier outputs, and the next run completes the commit.
    let o = run(
        &args(work, &out, &["seed=8"]),
        &[("FRESHEN_CRASH_AT", "commit-complete")],
    );
    assert!(!o.status.success());
    assert_eq!(view(&out), before);
    let o = run(
        &args(work, &out, &["seed=7"]),
        &[("FRESHEN_CRASH_AT", "started")],
    );
    assert!(
        text(&o).1.contains("completed the commit"),
        "{:?}",
        text(&o)
    );
    assert_eq!(seed_and_run(&out).map(|s| s.0), Some(8));
    // Killed right after the switch: readers see the new outputs whole at once.
    let o = run(
        &args(work, &out, &["seed=7"]),
        &[("FRESHEN_CRASH_AT", "commit-switched")],
    );
    assert!(!o.status.success());
    assert_eq!(seed_and_run(&out).map(|s| s.0), Some(7));
    // Runs killed with SIGKILL at spread-out moments, then a run that finishes.
    for (k, ms) in [150u64, 400, 700, 1000].iter().enumerate() {
        let seed = if k % 2 == 0 { "seed=7" } else { "seed=8" };
        let mut child = Command::new(env!("CARGO_BIN_EXE_freshen"))
            .args(args(work, &out, &[seed]))
            .current_dir(root())
            .env_remove("FRESHEN_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(*ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(run(&args(work, &out, &["seed=7"]), &[]).status.success());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0, "the reader never read");
    assert_eq!(seed_and_run(&out).map(|s| s.0), Some(7));
}

#[test]
fn a_folder_or_store_in_use_is_refused_and_leftovers_are_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let out = work.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(work.join("out-cache")).unwrap();
    let lock = freshen::store::lock::Lock::acquire(&out.join(".freshen/lock"), "x").unwrap();
    let o = run(&args(work, &out, &[]), &[]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    let pid = std::process::id();
    assert!(
        stderr.contains(&format!("is in use by another freshen run (pid {pid})")),
        "{stderr}"
    );
    drop(lock);
    let lock = freshen::store::lock::Lock::acquire(&work.join("out-cache/.lock"), "x").unwrap();
    let o = run(&args(work, &out, &[]), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("the store"), "{:?}", text(&o));
    drop(lock);
    // Leftovers of a dead run (pid 4194304 is above Linux's pid_max: never alive).
    let dead = [
        out.join(".metrics.parquet.4194304.tmp"),
        out.join(".checkpoint.4194304.old"),
        work.join("out-cache/.embeddings-0123456789abcdef.parquet.4194304.tmp"),
    ];
    std::fs::write(&dead[0], b"").unwrap();
    std::fs::create_dir(&dead[1]).unwrap();
    std::fs::write(&dead[2], vec![0u8; 1024]).unwrap();
    let o = run(&args(work, &out, &[]), &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    for d in &dead {
        assert!(!d.exists(), "{} was left", d.display());
    }
}

#[test]
fn a_run_refused_by_a_locked_store_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let out = work.join("new/out");
    let a = args(work, &out, &[]);
    let lock = freshen::store::lock::Lock::acquire(&work.join("new/out-cache/.lock"), "x").unwrap();
    let o = run(&a, &[]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the store"), "{stderr}");
    assert!(!out.exists(), "the refused run left {}", out.display());
    drop(lock);
    assert!(run(&a, &[]).status.success());
}

#[test]
fn progress_lines_are_logged_when_stderr_is_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let a = [
        args(work, &work.join("out"), &["nodes.pairs.steps=300"]),
        vec!["--progress-every".into(), "0.02".into()],
    ]
    .concat();
    let o = run(&a, &[]);
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("progress: train:"))
        .collect();
    assert!(!lines.is_empty(), "no progress line in {stderr}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" of 300 steps") && l.contains("steps/s") && l.contains("ETA")),
        "{lines:?}"
    );
}

/// A diverging run stops at its first non-finite step with one line and exit 2, and the
/// earlier outputs stay byte for byte; with `on_nonfinite: skip` it trains on and counts
/// the skipped steps in its summary.
#[test]
fn a_diverging_run_stops_and_leaves_the_earlier_outputs_or_skips_and_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let out = work.join("out");
    assert!(run(&args(work, &out, &[]), &[]).status.success());
    let before = contents(&out);
    let o = run(&args(work, &out, &["nodes.update.lr=1e30"]), &[]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stdout}{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("training diverged at step"))
        .unwrap_or_else(|| panic!("no divergence line in {stderr}"));
    assert!(line.contains("nodes.update.lr"), "{line}");
    assert!(line.contains("node update"), "{line}");
    assert_eq!(contents(&out), before, "the earlier outputs changed");
    // Skipping: every non-finite step is skipped and counted; the run ends and commits.
    let skip = work.join("skip");
    let o = run(
        &args(
            work,
            &skip,
            &["nodes.update.lr=1e30", "nodes.update.on_nonfinite=skip"],
        ),
        &[],
    );
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let skipped = crate::train::column_u64(&skip.join("summary.parquet"), "skipped_steps");
    assert!(skipped[0] >= 1 && skipped[0] < 12, "{skipped:?}");
    let ok = crate::train::column_u64(&out.join("summary.parquet"), "skipped_steps");
    assert_eq!(ok, [0]);
}
