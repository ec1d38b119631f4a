use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;

fn staged(dir: &Path, name: &str, text: &str) -> PendingFile {
    let p = PendingFile::new(&dir.join(name));
    std::fs::write(p.tmp_path(), text).unwrap();
    p
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A canonical run folder (as [`crate::graph::paths::run_folder`] gives it).
fn run_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().canonicalize().unwrap();
    (tmp, d)
}

#[test]
fn outputs_are_versions_read_through_links_and_the_one_before_is_kept() {
    let (_tmp, d) = run_dir();
    for (k, text) in ["one", "two", "three"].iter().enumerate() {
        let done = commit_all(
            vec![staged(&d, "a", text), staged(&d, "b", &format!("{text} b"))],
            &d,
        )
        .unwrap();
        assert_eq!(done, [d.join("a"), d.join("b")]);
        assert_eq!(current_version(&d), Some(k as u64 + 1));
        assert_eq!(read(&d.join("a")), *text);
        assert_eq!(read(&d.join("b")), format!("{text} b"));
        assert!(std::fs::symlink_metadata(d.join("a")).unwrap().is_symlink());
    }
    assert_eq!(versions(&d.join(VERSIONS)), [2, 3], "the one before stays");
    assert!(
        sweep(&[d.clone(), d.join(VERSIONS)]).is_empty(),
        "nothing left over"
    );
}

#[test]
fn outputs_a_run_does_not_write_are_carried_into_its_version() {
    let (_tmp, d) = run_dir();
    let ckpt = PendingFile::folder(&d.join("checkpoint")).unwrap();
    std::fs::write(ckpt.tmp_path().join("w"), "weights").unwrap();
    commit_all(vec![staged(&d, "a", "a1"), staged(&d, "b", "b1"), ckpt], &d).unwrap();
    commit_all(vec![staged(&d, "a", "a2")], &d).unwrap();
    assert_eq!(read(&d.join("a")), "a2");
    assert_eq!(read(&d.join("b")), "b1");
    assert_eq!(read(&d.join("checkpoint").join("w")), "weights");
    // A third commit deletes version 1: the carried files live on in versions 2 and 3.
    commit_all(vec![staged(&d, "a", "a3")], &d).unwrap();
    assert_eq!(versions(&d.join(VERSIONS)), [2, 3]);
    assert_eq!(read(&d.join("b")), "b1");
    assert_eq!(read(&d.join("checkpoint").join("w")), "weights");
}

#[test]
fn a_file_over_a_folder_fails_before_anything_moves() {
    let (_tmp, d) = run_dir();
    commit_all(vec![staged(&d, "a", "a1")], &d).unwrap();
    std::fs::create_dir(d.join("c")).unwrap();
    let e = commit_all(vec![staged(&d, "a", "a2"), staged(&d, "c", "c")], &d);
    assert!(e.is_err());
    assert_eq!(read(&d.join("a")), "a1");
    assert_eq!(current_version(&d), Some(1));
}

#[test]
fn an_older_designs_plain_file_is_replaced_by_the_link() {
    let (_tmp, d) = run_dir();
    std::fs::write(d.join("a"), "old a").unwrap();
    commit_all(vec![staged(&d, "a", "new a")], &d).unwrap();
    assert_eq!(read(&d.join("a")), "new a");
    assert!(std::fs::symlink_metadata(d.join("a")).unwrap().is_symlink());
}

#[test]
fn a_version_left_staging_is_rolled_back_and_a_complete_one_is_completed() {
    let (_tmp, d) = run_dir();
    commit_all(vec![staged(&d, "a", "a1"), staged(&d, "b", "b1")], &d).unwrap();
    // A dead run's staging folder (pid above Linux's pid_max: never alive).
    let dead = d.join(VERSIONS).join(".2.4194304.tmp");
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("a"), "half").unwrap();
    assert_eq!(recover(&d).unwrap(), Recovered::RolledBack);
    assert!(!dead.exists());
    assert_eq!(
        (read(&d.join("a")), read(&d.join("b"))),
        ("a1".into(), "b1".into())
    );
    assert_eq!(recover(&d).unwrap(), Recovered::Nothing);
    // A complete version that was never switched to (killed right after its rename).
    let v2 = d.join(VERSIONS).join("2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("a"), "a2").unwrap();
    std::fs::write(v2.join("b"), "b2").unwrap();
    let manifest = r#"[{"path":"a","folder":false},{"path":"b","folder":false}]"#;
    std::fs::write(v2.join(MANIFEST), manifest).unwrap();
    assert_eq!(read(&d.join("a")), "a1", "not current yet");
    assert_eq!(recover(&d).unwrap(), Recovered::Completed);
    assert_eq!(
        (read(&d.join("a")), read(&d.join("b"))),
        ("a2".into(), "b2".into())
    );
    assert_eq!(recover(&d).unwrap(), Recovered::Nothing);
    // Switched but one link not yet made (killed between): completed too.
    commit_all(vec![staged(&d, "a", "a3"), staged(&d, "n", "n3")], &d).unwrap();
    std::fs::remove_file(d.join("n")).unwrap();
    assert_eq!(recover(&d).unwrap(), Recovered::Completed);
    assert_eq!(read(&d.join("n")), "n3");
}

#[test]
fn an_older_designs_journal_is_rolled_back_or_completed() {
    let (_tmp, d) = run_dir();
    std::fs::create_dir(d.join(".freshen")).unwrap();
    std::fs::write(d.join("a"), "new a").unwrap();
    std::fs::write(d.join(".a.4194304.old"), "old a").unwrap();
    let journal = format!(
        r#"{{"state":"renaming","entries":[{{"tmp":"{t}","dest":"{a}","backup":"{o}","folder":false}}]}}"#,
        t = d.join(".a.4194304.tmp").display(),
        a = d.join("a").display(),
        o = d.join(".a.4194304.old").display()
    );
    std::fs::write(d.join(".freshen").join("commit.json"), &journal).unwrap();
    assert_eq!(recover(&d).unwrap(), Recovered::RolledBack);
    assert_eq!(read(&d.join("a")), "old a");
    let done = journal.replace("renaming", "done");
    std::fs::write(d.join(".a.4194304.old"), "older a").unwrap();
    std::fs::write(d.join(".freshen").join("commit.json"), done).unwrap();
    assert_eq!(recover(&d).unwrap(), Recovered::Completed);
    assert_eq!(read(&d.join("a")), "old a");
    assert!(!d.join(".a.4194304.old").exists());
}

/// A reader that resolves `current` once and reads two outputs inside it sees one
/// commit's pair every time, however the commits interleave with its reads.
#[test]
fn a_reader_polling_during_commits_never_sees_two_commits_together() {
    let (_tmp, d) = run_dir();
    commit_all(vec![staged(&d, "a", "0"), staged(&d, "b", "0")], &d).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (dir, flag) = (d.clone(), stop.clone());
    let reader = std::thread::spawn(move || {
        let mut reads = 0usize;
        while !flag.load(Ordering::Relaxed) {
            let Ok(target) = std::fs::read_link(dir.join(CURRENT)) else {
                continue;
            };
            let version = dir.join(target);
            let a = std::fs::read_to_string(version.join("a"));
            let b = std::fs::read_to_string(version.join("b"));
            if let (Ok(a), Ok(b)) = (a, b) {
                assert_eq!(a, b, "a mix of two commits");
                reads += 1;
            }
        }
        reads
    });
    for k in 1..200 {
        let text = k.to_string();
        commit_all(vec![staged(&d, "a", &text), staged(&d, "b", &text)], &d).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0, "the reader read nothing");
    assert_eq!(read(&d.join("a")), "199");
}

#[test]
fn leftovers_of_dead_runs_are_swept() {
    let (_tmp, d) = run_dir();
    std::fs::write(d.join(".metrics.parquet.4194304.tmp"), "").unwrap();
    std::fs::create_dir(d.join(".checkpoint.4194304.old")).unwrap();
    std::os::unix::fs::symlink(".versions/1", d.join(".current.4194304.tmp")).unwrap();
    let mine = sibling(&d.join("summary.parquet"), "tmp");
    std::fs::write(&mine, "").unwrap();
    std::fs::write(d.join("keep.parquet"), "").unwrap();
    let removed = sweep(std::slice::from_ref(&d));
    assert_eq!(removed.len(), 3, "{removed:?}");
    assert!(mine.exists() && d.join("keep.parquet").exists());
}
