//! Tests of the BEIR reader: fixtures and helpers, then reading; one test per error
//! class in [`errors`].

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Float32Array, Int32Array, Int64Array, LargeStringArray, NullArray,
    StringArray, UInt8Array,
};
use arrow::datatypes::{DataType, Int32Type};
use arrow::record_batch::RecordBatch;
use tempfile::TempDir;

use super::{Dataset, DatasetStats, Format, Kind, Table};
use crate::error::{Error, Result};
use crate::store::parquet_io::write_parquet;

mod errors;

// ----- helpers -------------------------------------------------------------------

fn strs(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn opt_strs(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn ints(values: &[i32]) -> ArrayRef {
    Arc::new(Int32Array::from(values.to_vec()))
}

/// Writes one batch whose (nullable) schema is inferred from the columns.
fn write_pq(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    write_parquet(path, batch.schema(), &[batch]).unwrap();
}

fn write_text(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The rows every well-formed test dataset holds, as strings.
fn expected_corpus() -> Vec<Vec<String>> {
    rows_of(&[
        &["d1", "Title one", "text one"],
        &["d2", "", "text two"],
        &["d3", "Title three", "text three"],
        &["5", "", "text five"],
        &["d6", "Title six", "text six"],
    ])
}

fn expected_queries() -> Vec<Vec<String>> {
    rows_of(&[
        &["q1", "query one"],
        &["q2", "query two"],
        &["7", "query seven"],
    ])
}

fn expected_test_qrels() -> Vec<Vec<String>> {
    rows_of(&[&["q1", "d1", "1"], &["q1", "d2", "0"], &["q2", "d3", "2"]])
}

fn expected_dev_qrels() -> Vec<Vec<String>> {
    rows_of(&[&["7", "5", "1"]])
}

fn rows_of(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect()
}

fn parquet_dataset() -> TempDir {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    write_pq(
        &root.join("corpus.parquet"),
        vec![
            ("id", strs(&["d1", "d2", "d3", "5", "d6"])),
            (
                "title",
                strs(&["Title one", "", "Title three", "", "Title six"]),
            ),
            (
                "text",
                strs(&[
                    "text one",
                    "text two",
                    "text three",
                    "text five",
                    "text six",
                ]),
            ),
        ],
    );
    write_pq(
        &root.join("queries.parquet"),
        vec![
            ("id", strs(&["q1", "q2", "7"])),
            ("text", strs(&["query one", "query two", "query seven"])),
        ],
    );
    write_pq(
        &root.join("qrels/test.parquet"),
        vec![
            ("query_id", strs(&["q1", "q1", "q2"])),
            ("corpus_id", strs(&["d1", "d2", "d3"])),
            ("score", ints(&[1, 0, 2])),
        ],
    );
    write_pq(
        &root.join("qrels/dev.parquet"),
        vec![
            ("query_id", strs(&["7"])),
            ("corpus_id", strs(&["5"])),
            ("score", ints(&[1])),
        ],
    );
    dir
}

/// The same rows in BEIR's layout, using what BEIR files do in the wild: numeric ids,
/// `id` for `_id`, absent and null titles, extra fields, blank lines, CRLF endings.
fn jsonl_dataset() -> TempDir {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    write_text(
        &root.join("corpus.jsonl"),
        concat!(
            "{\"_id\": \"d1\", \"title\": \"Title one\", \"text\": \"text one\"}\n",
            "{\"_id\": \"d2\", \"text\": \"text two\", \"metadata\": {\"a\": [1]}}\r\n",
            "\n",
            "{\"id\": \"d3\", \"title\": \"Title three\", \"text\": \"text three\"}\n",
            "{\"_id\": 5, \"title\": null, \"text\": \"text five\"}\n",
            "{\"_id\": \"d6\", \"title\": \"Title six\", \"text\": \"text six\"}",
        ),
    );
    write_text(
        &root.join("queries.jsonl"),
        concat!(
            "{\"_id\": \"q1\", \"text\": \"query one\", \"metadata\": {}}\n",
            "{\"_id\": \"q2\", \"text\": \"query two\"}\n",
            "{\"_id\": 7, \"text\": \"query seven\"}\n",
            "\n",
        ),
    );
    write_text(
        &root.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td2\t0\r\nq2\td3\t2\r\n",
    );
    write_text(
        &root.join("qrels/dev.tsv"),
        "query-id\tcorpus-id\tscore\n7\t5\t1\n",
    );
    dir
}

/// Reads a table: the size of each batch and all rows as strings. Checks every batch
/// has the normalised schema.
fn collect(ds: &Dataset, table: &Table, batch_size: usize) -> (Vec<usize>, Vec<Vec<String>>) {
    let schema = Kind::of(table).schema();
    let mut sizes = Vec::new();
    let mut rows = Vec::new();
    for batch in ds.read(table, batch_size).unwrap() {
        let batch = batch.unwrap();
        assert_eq!(batch.schema(), schema);
        sizes.push(batch.num_rows());
        for i in 0..batch.num_rows() {
            let row = batch
                .columns()
                .iter()
                .map(|c| match c.data_type() {
                    DataType::Utf8 => c.as_string::<i32>().value(i).to_string(),
                    DataType::Int32 => c.as_primitive::<Int32Type>().value(i).to_string(),
                    dt => panic!("unexpected type {dt}"),
                })
                .collect();
            rows.push(row);
        }
    }
    (sizes, rows)
}

/// The first error of reading a whole table, whether at open or in a batch.
fn read_err(ds: &Dataset, table: &Table) -> Error {
    match ds.read(table, 2) {
        Err(e) => e,
        Ok(batches) => batches
            .filter_map(|b| b.err())
            .next()
            .expect("expected a read error"),
    }
}

fn some_err<T>(result: Result<T>) -> Error {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// Asserts `e` is a data error on `path` at `row` and prints exactly `message`.
fn assert_data(e: &Error, path: &Path, row: Option<usize>, message: &str) {
    let expected = match row {
        Some(row) => format!("{}: row {row}: {message}", path.display()),
        None => format!("{}: {message}", path.display()),
    };
    assert_eq!(e.to_string(), expected);
    match e {
        Error::Data { file, row: r, .. } => {
            assert_eq!(file, path);
            assert_eq!(*r, row);
        }
        other => panic!("expected a data error, got {other:?}"),
    }
    assert!(!e.to_string().contains('\n'));
}

fn qrels(split: &str) -> Table {
    Table::Qrels(split.to_string())
}

// ----- reading -------------------------------------------------------------------

#[test]
fn parquet_dataset_reads_back_normalised() {
    let dir = parquet_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    assert_eq!(ds.format(), Format::Parquet);
    assert_eq!(ds.root(), dir.path());
    assert_eq!(
        ds.path(&qrels("test")),
        dir.path().join("qrels/test.parquet")
    );
    assert_eq!(ds.splits().unwrap(), vec!["dev", "test"]);
    for table in [Table::Corpus, Table::Queries, qrels("test"), qrels("dev")] {
        ds.check_columns(&table).unwrap();
    }
    assert_eq!(collect(&ds, &Table::Corpus, 100).1, expected_corpus());
    assert_eq!(collect(&ds, &Table::Queries, 100).1, expected_queries());
    assert_eq!(collect(&ds, &qrels("test"), 100).1, expected_test_qrels());
    assert_eq!(collect(&ds, &qrels("dev"), 100).1, expected_dev_qrels());
    assert_eq!(ds.row_count(&Table::Corpus).unwrap(), 5);
    assert_eq!(ds.row_count(&qrels("test")).unwrap(), 3);
    let stats = ds.validate().unwrap();
    assert_eq!(
        stats,
        DatasetStats {
            corpus: 5,
            queries: 3,
            qrels: vec![("dev".to_string(), 1), ("test".to_string(), 3)],
        }
    );
}

#[test]
fn jsonl_dataset_reads_the_same_rows_as_parquet() {
    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    assert_eq!(ds.format(), Format::Jsonl);
    assert_eq!(ds.path(&Table::Corpus), dir.path().join("corpus.jsonl"));
    assert_eq!(ds.path(&qrels("dev")), dir.path().join("qrels/dev.tsv"));
    assert_eq!(ds.splits().unwrap(), vec!["dev", "test"]);
    for table in [Table::Corpus, Table::Queries, qrels("test"), qrels("dev")] {
        ds.check_columns(&table).unwrap();
    }
    let pq_dir = parquet_dataset();
    let pq = Dataset::open(pq_dir.path(), None).unwrap();
    for table in [Table::Corpus, Table::Queries, qrels("test"), qrels("dev")] {
        assert_eq!(
            collect(&ds, &table, 100).1,
            collect(&pq, &table, 100).1,
            "{table}"
        );
    }
    assert_eq!(collect(&ds, &Table::Corpus, 100).1, expected_corpus());
    assert_eq!(collect(&ds, &qrels("test"), 100).1, expected_test_qrels());
    assert_eq!(ds.validate().unwrap(), pq.validate().unwrap());
}

#[test]
fn small_batches_split_rows_without_losing_any() {
    for dir in [parquet_dataset(), jsonl_dataset()] {
        let ds = Dataset::open(dir.path(), None).unwrap();
        let (sizes, rows) = collect(&ds, &Table::Corpus, 2);
        assert_eq!(sizes, vec![2, 2, 1], "{:?}", ds.format());
        assert_eq!(rows, collect(&ds, &Table::Corpus, 100).1);
        assert_eq!(rows, expected_corpus());
        let (sizes, rows) = collect(&ds, &qrels("test"), 2);
        assert_eq!(sizes, vec![2, 1]);
        assert_eq!(rows, expected_test_qrels());
        let (sizes, _) = collect(&ds, &Table::Queries, 0);
        assert_eq!(sizes, vec![1, 1, 1], "batch size 0 counts as 1");
    }
}

#[test]
fn parquet_accepts_large_utf8_optional_title_extra_columns_and_any_integer_score() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    let large = |v: &[&str]| -> ArrayRef { Arc::new(LargeStringArray::from(v.to_vec())) };
    write_pq(
        &root.join("corpus.parquet"),
        vec![
            (
                "extra",
                Arc::new(Float32Array::from(vec![1.0, 2.0])) as ArrayRef,
            ),
            ("text", large(&["text one", "text two"])),
            ("title", opt_strs(&[None, Some("Title two")])),
            ("id", large(&["d1", "d2"])),
        ],
    );
    write_pq(
        &root.join("queries.parquet"),
        vec![("id", strs(&["q1"])), ("text", large(&["query one"]))],
    );
    write_pq(
        &root.join("qrels/test.parquet"),
        vec![
            ("score", Arc::new(Int64Array::from(vec![3, -1])) as ArrayRef),
            ("corpus_id", large(&["d1", "d2"])),
            ("query_id", strs(&["q1", "q1"])),
        ],
    );
    write_pq(
        &root.join("qrels/dev.parquet"),
        vec![
            ("query_id", strs(&["q1"])),
            ("corpus_id", strs(&["d2"])),
            ("score", Arc::new(UInt8Array::from(vec![200])) as ArrayRef),
        ],
    );
    let ds = Dataset::open(root, None).unwrap();
    assert_eq!(
        collect(&ds, &Table::Corpus, 10).1,
        rows_of(&[&["d1", "", "text one"], &["d2", "Title two", "text two"]])
    );
    assert_eq!(
        collect(&ds, &qrels("test"), 10).1,
        rows_of(&[&["q1", "d1", "3"], &["q1", "d2", "-1"]])
    );
    assert_eq!(
        collect(&ds, &qrels("dev"), 10).1,
        rows_of(&[&["q1", "d2", "200"]])
    );

    // A title column of type Null (pandas' all-`None` column) is all empty titles.
    let batch = RecordBatch::try_from_iter_with_nullable(vec![
        ("id", strs(&["d1", "d2"]), false),
        ("title", Arc::new(NullArray::new(2)) as ArrayRef, true),
        ("text", strs(&["a", "b"]), false),
    ])
    .unwrap();
    write_parquet(&root.join("corpus.parquet"), batch.schema(), &[batch]).unwrap();
    assert_eq!(
        collect(&ds, &Table::Corpus, 10).1,
        rows_of(&[&["d1", "", "a"], &["d2", "", "b"]])
    );

    // Without a title column every title is empty.
    write_pq(
        &root.join("corpus.parquet"),
        vec![("id", strs(&["d1", "d2"])), ("text", strs(&["a", "b"]))],
    );
    ds.check_columns(&Table::Corpus).unwrap();
    assert_eq!(
        collect(&ds, &Table::Corpus, 10).1,
        rows_of(&[&["d1", "", "a"], &["d2", "", "b"]])
    );
    assert_eq!(ds.validate().unwrap().corpus, 2);
}

#[test]
fn row_count_counts_records_not_lines() {
    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    // corpus.jsonl: 6 lines, one blank, no final newline; queries.jsonl ends in a blank line.
    assert_eq!(ds.row_count(&Table::Corpus).unwrap(), 5);
    assert_eq!(ds.row_count(&Table::Queries).unwrap(), 3);
    assert_eq!(ds.row_count(&qrels("test")).unwrap(), 3);
    assert_eq!(ds.row_count(&qrels("dev")).unwrap(), 1);
}

#[test]
fn splits_list_only_qrels_files_of_the_format() {
    let dir = jsonl_dataset();
    let root = dir.path();
    write_text(&root.join("qrels/notes.txt"), "x");
    write_text(&root.join("qrels/.train.tsv"), "x");
    write_text(&root.join("qrels/train.parquet"), "x");
    std::fs::create_dir_all(root.join("qrels/sub.tsv")).unwrap();
    let ds = Dataset::open(root, None).unwrap();
    assert_eq!(ds.splits().unwrap(), vec!["dev", "test"]);
    std::fs::remove_dir_all(root.join("qrels")).unwrap();
    assert_eq!(ds.splits().unwrap(), Vec::<String>::new());
    assert_eq!(ds.validate().unwrap().qrels, vec![]);
}

#[test]
fn open_detects_the_format_or_says_what_it_expected() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    let e = some_err(Dataset::open(root, None));
    assert_data(
        &e,
        root,
        None,
        "no dataset found (expected corpus.parquet or corpus.jsonl)",
    );
    write_text(&root.join("corpus.jsonl"), "");
    assert_eq!(Dataset::open(root, None).unwrap().format(), Format::Jsonl);
    write_text(&root.join("corpus.parquet"), "");
    let e = some_err(Dataset::open(root, None));
    assert_data(
        &e,
        root,
        None,
        "both corpus.parquet and corpus.jsonl exist (expected one; set the format explicitly)",
    );
    let ds = Dataset::open(root, Some(Format::Jsonl)).unwrap();
    assert_eq!(ds.format(), Format::Jsonl);
    assert!(matches!(
        Dataset::open(&root.join("nope"), None),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        Dataset::open(&root.join("corpus.jsonl"), None),
        Err(Error::Io { .. })
    ));
    assert_eq!("JSONL".parse::<Format>().unwrap(), Format::Jsonl);
    assert_eq!(
        Format::Parquet.to_string().parse::<Format>().unwrap(),
        Format::Parquet
    );
    assert!("csv".parse::<Format>().is_err());
}
