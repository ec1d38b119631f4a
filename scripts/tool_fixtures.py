#!/usr/bin/env python3
"""Writes tests/fixtures/tools/: for each of pyarrow, polars and DuckDB, one tiny BEIR
dataset (data/) and embedding store files (store/) for that dataset, each in the layout
that tool writes by default.

    python3 scripts/tool_fixtures.py     # needs pyarrow, polars and duckdb (pip install ...)

The store files key the dataset's texts (`text_hash` is freshen's text hash of each text)
with vectors no encoder computes, so a run that reuses them emits exactly those vectors.
Per tool: `fixed.parquet` holds the vectors as fixed-size lists with a `uint64` hash, and
`list.parquet` as plain lists of float with the hash stored signed (`int64`, same bits).

The files are committed; the integration tests read every one of them with freshen.
"""
import os
import shutil

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tools")
# The width of the vectors of the integration tests' hashed encoder.
DIM = 16
MASK = (1 << 64) - 1

corpus = {
    "id": [f"d{i}" for i in range(6)],
    "title": ["", "river", "", "stone", "", "light"],
    "text": [f"document number {i} about {w}" for i, w in enumerate(
        ["banks", "water", "walls", "roads", "lamps", "winter"])],
}
queries = {"id": [f"q{i}" for i in range(6)], "text": [f"what is {i}" for i in range(6)]}
qrels = {"query_id": [f"q{i}" for i in range(6)], "corpus_id": [f"d{i}" for i in range(6)],
         "score": [1] * 6}
TABLES = [("corpus", corpus), ("queries", queries), ("qrels/test", qrels)]


def text_hash(text):
    """freshen's text hash (operators/src/hashing.rs): FNV-1a 64, then splitmix64's finaliser."""
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & MASK
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & MASK
    return h ^ (h >> 31)


def signed(h):
    return h - (1 << 64) if h >= 1 << 63 else h


# The store rows: the corpus's keys (the encoder embeds the text alone) and vectors
# `row + k / 100`, which no encoder computes.
store_ids = corpus["id"]
store_hashes = [text_hash(t.strip()) for t in corpus["text"]]
store_vectors = [[r + k / 100 for k in range(DIM)] for r in range(len(store_ids))]


def path(folder, name):
    p = os.path.join(folder, name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def write_pyarrow(folder):
    for name, table in TABLES:
        pq.write_table(pa.table(table), path(folder, f"data/{name}.parquet"))
    # As freshen writes a store (non-null items named `item`), rewritten by pyarrow: it
    # names the list's items `element`.
    item = pa.field("item", pa.float32(), nullable=False)
    fixed = pa.table({
        "id": pa.array(store_ids, pa.string()),
        "text_hash": pa.array(store_hashes, pa.uint64()),
        "embedding": pa.array(store_vectors, pa.list_(item, DIM)),
    })
    pq.write_table(fixed, path(folder, "store/fixed.parquet"))
    listed = pa.table({
        "id": pa.array(store_ids, pa.large_string()),
        "text_hash": pa.array([signed(h) for h in store_hashes], pa.int64()),
        "embedding": pa.array(store_vectors, pa.list_(pa.float32())),
    })
    pq.write_table(listed, path(folder, "store/list.parquet"))


def write_polars(folder):
    for name, table in TABLES:
        pl.DataFrame(table).write_parquet(path(folder, f"data/{name}.parquet"))
    pl.DataFrame({
        "id": store_ids,
        "text_hash": pl.Series(store_hashes, dtype=pl.UInt64),
        "embedding": pl.Series(store_vectors, dtype=pl.Array(pl.Float32, DIM)),
    }).write_parquet(path(folder, "store/fixed.parquet"))
    pl.DataFrame({
        "id": store_ids,
        "text_hash": pl.Series([signed(h) for h in store_hashes], dtype=pl.Int64),
        "embedding": pl.Series(store_vectors, dtype=pl.List(pl.Float32)),
    }).write_parquet(path(folder, "store/list.parquet"))


def write_duckdb(folder):
    db = duckdb.connect()
    for name, table in TABLES:
        # Through a pyarrow table only to hand DuckDB the rows; DuckDB writes the file.
        db.register("t", pa.table(table))
        db.execute(f"COPY (SELECT * FROM t) TO '{path(folder, f'data/{name}.parquet')}' (FORMAT parquet)")
        db.unregister("t")
    rows = pa.table({
        "id": store_ids,
        "text_hash": pa.array(store_hashes, pa.uint64()),
        "signed_hash": pa.array([signed(h) for h in store_hashes], pa.int64()),
        "embedding": store_vectors,
    })
    db.register("s", rows)
    db.execute(
        f"COPY (SELECT id::VARCHAR AS id, text_hash::UBIGINT AS text_hash, "
        f"embedding::FLOAT[{DIM}] AS embedding FROM s) "
        f"TO '{path(folder, 'store/fixed.parquet')}' (FORMAT parquet)")
    db.execute(
        f"COPY (SELECT id::VARCHAR AS id, signed_hash AS text_hash, "
        f"embedding::FLOAT[] AS embedding FROM s) "
        f"TO '{path(folder, 'store/list.parquet')}' (FORMAT parquet)")


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    for tool, write in [("pyarrow", write_pyarrow), ("polars", write_polars), ("duckdb", write_duckdb)]:
        folder = os.path.join(ROOT, tool)
        write(folder)
        for store in ["fixed", "list"]:
            schema = pq.read_schema(os.path.join(folder, "store", f"{store}.parquet"))
            print(f"{tool}/{store}: {schema.field('text_hash').type}, {schema.field('embedding').type}")


if __name__ == "__main__":
    main()
