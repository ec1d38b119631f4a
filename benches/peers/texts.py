#!/usr/bin/env python3
"""Write WordNet texts from the shipped sample, one per line, for the peer
benchmarks: the first N rows of the `text` column in file order, with any
newlines, carriage returns and tabs turned into spaces.

  python benches/peers/texts.py --out out/peers/texts.txt [--n 2000]

By default the rows come from data/wordnet-sample/corpus.parquet (the targets:
lemma names, part of speech and hypernyms, e.g. "moribund (adjective)");
--source queries takes queries.parquet instead (the glosses, e.g. "being on
the point of death; breathing your last"). Prints one JSON object on stdout.
"""
import argparse
import json
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--source", choices=["corpus", "queries"], default="corpus")
    ap.add_argument("--data", default=os.path.join(REPO, "data", "wordnet-sample"))
    args = ap.parse_args()

    import pyarrow.parquet as pq

    path = os.path.join(args.data, f"{args.source}.parquet")
    table = pq.read_table(path, columns=["text"])
    col = table.column("text").slice(0, args.n).to_pylist()
    lines = [" ".join(t.replace("\r", " ").replace("\n", " ").replace("\t", " ").split()) for t in col]
    lines = [t for t in lines if t]
    if len(lines) < args.n:
        print(f"texts: only {len(lines)} non-empty texts in {path} (asked for {args.n})", file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for t in lines:
            f.write(t + "\n")
    print(json.dumps({"out": args.out, "source": os.path.relpath(path, REPO), "texts": len(lines),
                      "mean_chars": round(sum(map(len, lines)) / max(1, len(lines)), 1)}))


if __name__ == "__main__":
    main()
