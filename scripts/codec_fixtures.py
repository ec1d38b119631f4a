#!/usr/bin/env python3
"""Writes tests/fixtures/codecs/: one tiny BEIR dataset per (writer, codec), as users'
tools write Parquet: pyarrow and polars, each with snappy, gzip, zstd, lz4 and brotli.

    python3 scripts/codec_fixtures.py     # needs pyarrow and polars (pip install pyarrow polars)

The files are committed; the integration tests read every one of them with freshen.
"""
import os
import shutil
import sys

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "codecs")
CODECS = ["snappy", "gzip", "zstd", "lz4", "brotli"]

corpus = {
    "id": [f"d{i}" for i in range(6)],
    "title": ["", "river", "", "stone", "", "light"],
    "text": [f"document number {i} about {w}" for i, w in enumerate(
        ["banks", "water", "walls", "roads", "lamps", "winter"])],
}
queries = {"id": [f"q{i}" for i in range(6)], "text": [f"what is {i}" for i in range(6)]}
qrels = {"query_id": [f"q{i}" for i in range(6)], "corpus_id": [f"d{i}" for i in range(6)],
         "score": [1] * 6}


def write_pyarrow(folder, codec):
    for name, table in [("corpus", corpus), ("queries", queries), ("qrels/test", qrels)]:
        path = os.path.join(folder, f"{name}.parquet")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(pa.table(table), path, compression=codec)


def write_polars(folder, codec):
    for name, table in [("corpus", corpus), ("queries", queries), ("qrels/test", qrels)]:
        path = os.path.join(folder, f"{name}.parquet")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        frame = pl.DataFrame(table)
        if "score" in table:
            frame = frame.with_columns(pl.col("score").cast(pl.Int32))
        frame.write_parquet(path, compression=codec)


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    for writer, write in [("pyarrow", write_pyarrow), ("polars", write_polars)]:
        for codec in CODECS:
            folder = os.path.join(ROOT, f"{writer}-{codec}")
            write(folder, codec)
            meta = pq.ParquetFile(os.path.join(folder, "corpus.parquet")).metadata
            got = meta.row_group(0).column(0).compression
            print(f"{folder}: {got}", file=sys.stderr)


if __name__ == "__main__":
    main()
