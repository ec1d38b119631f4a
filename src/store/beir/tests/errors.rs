//! One test per class of error: what is reported, and where.

use std::io::ErrorKind;

use super::*;

#[test]
fn missing_file_is_an_io_error() {
    for dir in [parquet_dataset(), jsonl_dataset()] {
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Queries);
        std::fs::remove_file(&path).unwrap();
        for e in [
            read_err(&ds, &Table::Queries),
            some_err(ds.check_columns(&Table::Queries)),
            some_err(ds.row_count(&Table::Queries)),
            some_err(ds.validate()),
            read_err(&ds, &qrels("train")),
        ] {
            match &e {
                Error::Io { path: p, source } => {
                    assert!(p == &path || p == &ds.path(&qrels("train")), "{p:?}");
                    assert_eq!(source.kind(), ErrorKind::NotFound);
                }
                other => panic!("expected an I/O error, got {other:?}"),
            }
        }
    }
}

#[test]
fn missing_column_is_reported_with_the_expected_columns() {
    let dir = parquet_dataset();
    let root = dir.path();
    let ds = Dataset::open(root, None).unwrap();
    let path = ds.path(&Table::Corpus);
    write_pq(&path, vec![("id", strs(&["d1"])), ("title", strs(&["t"]))]);
    let msg = "missing column `text` (expected columns id, title, text)";
    assert_data(
        &some_err(ds.check_columns(&Table::Corpus)),
        &path,
        None,
        msg,
    );
    assert_data(&read_err(&ds, &Table::Corpus), &path, None, msg);
    assert_data(&some_err(ds.validate()), &path, None, msg);

    let path = ds.path(&qrels("test"));
    write_pq(
        &path,
        vec![("query_id", strs(&["q1"])), ("corpus_id", strs(&["d1"]))],
    );
    let msg = "missing column `score` (expected columns query_id, corpus_id, score)";
    assert_data(
        &some_err(ds.check_columns(&qrels("test"))),
        &path,
        None,
        msg,
    );
}

#[test]
fn jsonl_missing_field_is_reported_with_its_line() {
    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Corpus);
    write_text(
        &path,
        "{\"_id\": \"d1\", \"text\": \"a\"}\n{\"_id\": \"d2\", \"body\": \"b\"}\n",
    );
    ds.check_columns(&Table::Corpus).unwrap();
    let e = read_err(&ds, &Table::Corpus);
    assert_data(
        &e,
        &path,
        Some(2),
        "missing field `text` (expected fields _id, title, text)",
    );
    let path = ds.path(&Table::Queries);
    write_text(&path, "\n{\"qid\": \"q1\", \"text\": \"a\"}\n");
    let e = some_err(ds.check_columns(&Table::Queries));
    assert_data(
        &e,
        &path,
        Some(2),
        "missing field `_id` (expected fields _id, text)",
    );
}

#[test]
fn wrong_column_type_is_reported() {
    let dir = parquet_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Queries);
    write_pq(
        &path,
        vec![
            ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("text", strs(&["a"])),
        ],
    );
    let msg = "column `id` has type Int64 (expected a string)";
    assert_data(
        &some_err(ds.check_columns(&Table::Queries)),
        &path,
        None,
        msg,
    );
    assert_data(&read_err(&ds, &Table::Queries), &path, None, msg);

    let path = ds.path(&qrels("dev"));
    write_pq(
        &path,
        vec![
            ("query_id", strs(&["q1"])),
            ("corpus_id", strs(&["d1"])),
            ("score", Arc::new(Float32Array::from(vec![1.0])) as ArrayRef),
        ],
    );
    let msg = "column `score` has type Float32 (expected an integer)";
    assert_data(&read_err(&ds, &qrels("dev")), &path, None, msg);

    // In JSONL, the type of a field is checked per record.
    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Corpus);
    write_text(&path, "{\"_id\": \"d1\", \"title\": 3, \"text\": \"a\"}\n");
    let e = some_err(ds.check_columns(&Table::Corpus));
    assert_data(
        &e,
        &path,
        Some(1),
        "`title` is a number (expected a string)",
    );
    write_text(&path, "{\"_id\": [1], \"text\": \"a\"}\n");
    let e = read_err(&ds, &Table::Corpus);
    assert_data(
        &e,
        &path,
        Some(1),
        "`_id` is an array (expected a string or a number)",
    );
}

#[test]
fn null_text_is_reported_with_its_row() {
    let dir = parquet_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Corpus);
    write_pq(
        &path,
        vec![
            ("id", strs(&["d1", "d2", "d3"])),
            ("text", opt_strs(&[Some("a"), Some("b"), None])),
        ],
    );
    // Row 3 lies in the second batch of two rows: rows count across batches.
    assert_data(&read_err(&ds, &Table::Corpus), &path, Some(3), "null text");
    assert_data(&some_err(ds.validate()), &path, Some(3), "null text");

    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Queries);
    write_text(
        &path,
        "{\"_id\": \"q1\", \"text\": \"a\"}\n\n{\"_id\": \"q2\", \"text\": null}\n",
    );
    assert_data(&read_err(&ds, &Table::Queries), &path, Some(3), "null text");
}

#[test]
fn empty_text_is_reported_with_its_row() {
    let dir = parquet_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Queries);
    write_pq(
        &path,
        vec![
            ("id", strs(&["q1", "q2", "q3"])),
            ("text", strs(&["a", "b", " \t "])),
        ],
    );
    assert_data(
        &read_err(&ds, &Table::Queries),
        &path,
        Some(3),
        "empty text",
    );

    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Corpus);
    // A document with a title and no text is usable (BEIR's TREC-COVID has many);
    // one with neither is not.
    write_text(
        &path,
        concat!(
            "{\"_id\": \"d1\", \"title\": \"Only a title\", \"text\": \"\"}\n",
            "{\"_id\": \"d2\", \"title\": \" \", \"text\": \"  \"}\n",
        ),
    );
    let e = read_err(&ds, &Table::Corpus);
    assert_data(&e, &path, Some(2), "empty text (and no title)");
}

#[test]
fn null_id_is_reported_with_its_row() {
    let dir = parquet_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Corpus);
    write_pq(
        &path,
        vec![
            ("id", opt_strs(&[Some("d1"), None])),
            ("text", strs(&["a", "b"])),
        ],
    );
    assert_data(&read_err(&ds, &Table::Corpus), &path, Some(2), "null id");

    let path = ds.path(&qrels("test"));
    write_pq(
        &path,
        vec![
            ("query_id", opt_strs(&[None])),
            ("corpus_id", strs(&["d1"])),
            ("score", ints(&[1])),
        ],
    );
    assert_data(
        &read_err(&ds, &qrels("test")),
        &path,
        Some(1),
        "null query id",
    );

    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Queries);
    write_text(&path, "{\"_id\": null, \"text\": \"a\"}\n");
    assert_data(&read_err(&ds, &Table::Queries), &path, Some(1), "null id");
    let path = ds.path(&qrels("dev"));
    write_text(&path, "query-id\tcorpus-id\tscore\n7\t\t1\n");
    assert_data(
        &read_err(&ds, &qrels("dev")),
        &path,
        Some(2),
        "empty corpus id",
    );
}

#[test]
fn duplicate_id_is_reported_with_both_rows() {
    let dir = parquet_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Corpus);
    write_pq(
        &path,
        vec![
            ("id", strs(&["d1", "d2", "d1"])),
            ("text", strs(&["a", "b", "c"])),
        ],
    );
    // Reading does not look across rows; validation does.
    assert_eq!(collect(&ds, &Table::Corpus, 2).1.len(), 3);
    let e = some_err(ds.validate());
    assert_data(
        &e,
        &path,
        Some(3),
        "duplicate id `d1` (first seen at row 1)",
    );

    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Queries);
    // Rows are line numbers: the blank line 2 counts.
    write_text(
        &path,
        concat!(
            "{\"_id\": 7, \"text\": \"a\"}\n",
            "\n",
            "{\"_id\": \"q2\", \"text\": \"b\"}\n",
            "{\"_id\": \"7\", \"text\": \"c\"}\n",
        ),
    );
    let e = some_err(ds.validate());
    assert_data(&e, &path, Some(4), "duplicate id `7` (first seen at row 1)");
}

#[test]
fn qrel_naming_an_unknown_query_id_is_reported() {
    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&qrels("test"));
    write_text(&path, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n");
    let e = some_err(ds.validate());
    assert_data(&e, &path, Some(3), "qrel names unknown query id `q9`");

    let dir = parquet_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&qrels("dev"));
    write_pq(
        &path,
        vec![
            ("query_id", strs(&["7", "q1", "d1"])),
            ("corpus_id", strs(&["5", "d1", "d1"])),
            ("score", ints(&[1, 1, 1])),
        ],
    );
    let e = some_err(ds.validate());
    assert_data(&e, &path, Some(3), "qrel names unknown query id `d1`");
}

#[test]
fn qrel_naming_an_unknown_corpus_id_is_reported() {
    let dir = parquet_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&qrels("test"));
    write_pq(
        &path,
        vec![
            ("query_id", strs(&["q1", "q2"])),
            ("corpus_id", strs(&["d1", "q2"])),
            ("score", ints(&[1, 1])),
        ],
    );
    let e = some_err(ds.validate());
    assert_data(&e, &path, Some(2), "qrel names unknown corpus id `q2`");

    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&qrels("dev"));
    write_text(&path, "query-id\tcorpus-id\tscore\n\n7\t05\t1\n");
    let e = some_err(ds.validate());
    assert_data(&e, &path, Some(3), "qrel names unknown corpus id `05`");
}

#[test]
fn invalid_json_is_reported_with_its_line() {
    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Corpus);
    write_text(
        &path,
        "{\"_id\": \"d1\", \"text\": \"a\"}\n{\"_id\": \"d2\", \"text\": \n",
    );
    ds.check_columns(&Table::Corpus).unwrap();
    let e = read_err(&ds, &Table::Corpus);
    assert_data(
        &e,
        &path,
        Some(2),
        "invalid JSON (EOF while parsing a value at column 22)",
    );
    write_text(&path, "[\"d1\", \"a\"]\n");
    let e = some_err(ds.check_columns(&Table::Corpus));
    assert_data(&e, &path, Some(1), "expected a JSON object, found an array");
    std::fs::write(&path, b"{\"_id\": \"d1\", \"text\": \"\xff\"}\n").unwrap();
    let e = read_err(&ds, &Table::Corpus);
    assert_data(&e, &path, Some(1), "invalid UTF-8 (expected UTF-8 text)");
}

#[test]
fn bad_score_is_reported_with_its_row() {
    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&qrels("test"));
    write_text(
        &path,
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\tabc\n",
    );
    let e = read_err(&ds, &qrels("test"));
    assert_data(&e, &path, Some(3), "score `abc` is not an integer");
    assert_data(
        &some_err(ds.validate()),
        &path,
        Some(3),
        "score `abc` is not an integer",
    );
    write_text(&path, "query-id\tcorpus-id\tscore\nq1\td1\t1.0\n");
    let e = read_err(&ds, &qrels("test"));
    assert_data(&e, &path, Some(2), "score `1.0` is not an integer");
    write_text(&path, "query-id\tcorpus-id\tscore\nq1\td1\n");
    let e = read_err(&ds, &qrels("test"));
    assert_data(
        &e,
        &path,
        Some(2),
        "expected 3 tab-separated fields (query-id, corpus-id, score), found 2",
    );

    let dir = parquet_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&qrels("test"));
    write_pq(
        &path,
        vec![
            ("query_id", strs(&["q1", "q1", "q2"])),
            ("corpus_id", strs(&["d1", "d2", "d3"])),
            (
                "score",
                Arc::new(Int64Array::from(vec![Some(1), Some(3_000_000_000), None])),
            ),
        ],
    );
    let e = read_err(&ds, &qrels("test"));
    assert_data(
        &e,
        &path,
        Some(2),
        "score `3000000000` is out of the int32 range",
    );
    write_pq(
        &path,
        vec![
            ("query_id", strs(&["q1", "q1", "q2"])),
            ("corpus_id", strs(&["d1", "d2", "d3"])),
            (
                "score",
                Arc::new(Int64Array::from(vec![Some(1), Some(2), None])),
            ),
        ],
    );
    assert_data(&read_err(&ds, &qrels("test")), &path, Some(3), "null score");
}

#[test]
fn tsv_header_is_required() {
    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&qrels("test"));
    write_text(&path, "q1\td1\t1\n");
    let msg =
        "unexpected header `q1\\td1\\t1` (expected header query-id, corpus-id, score separated by tabs)";
    assert_data(
        &some_err(ds.check_columns(&qrels("test"))),
        &path,
        Some(1),
        msg,
    );
    assert_data(&read_err(&ds, &qrels("test")), &path, Some(1), msg);
    write_text(&path, "");
    let e = some_err(ds.check_columns(&qrels("test")));
    assert_data(
        &e,
        &path,
        None,
        "empty file (expected header query-id, corpus-id, score separated by tabs)",
    );
    write_text(&path, "\u{feff}Query_ID\tcorpus_id\tScore\nq1\td1\t1\n");
    ds.check_columns(&qrels("test")).unwrap();
    assert_eq!(
        collect(&ds, &qrels("test"), 10).1,
        rows_of(&[&["q1", "d1", "1"]])
    );
}

#[test]
fn values_in_messages_stay_on_one_line() {
    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Queries);
    write_text(
        &path,
        "{\"_id\": \"a\\nb\", \"text\": \"x\"}\n{\"_id\": \"a\\nb\", \"text\": \"y\"}\n",
    );
    let e = some_err(ds.validate());
    assert_data(
        &e,
        &path,
        Some(2),
        "duplicate id `a\\nb` (first seen at row 1)",
    );
}

#[test]
fn reader_ends_after_an_error() {
    let dir = jsonl_dataset();
    let ds = Dataset::open(dir.path(), None).unwrap();
    let path = ds.path(&Table::Queries);
    write_text(
        &path,
        "{\"_id\": \"q1\", \"text\": \"a\"}\nnot json\n{\"_id\": \"q3\", \"text\": \"c\"}\n",
    );
    let items: Vec<_> = ds.read(&Table::Queries, 1).unwrap().collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(items[1].is_err());
}
