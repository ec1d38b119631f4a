#!/usr/bin/env python3
"""Passage-length texts for the speed benchmarks: prose paragraphs from the docstrings
of CPython's standard library (PSF licence), cut to an exact number of word pieces.

  python benches/peers/passages.py --tokens 128 --n 1000 --out out/speed/passages-128.txt

The source is `benches/data/passages.txt` (shipped: 1,000 passages of 256 word pieces,
made once with --make from Python 3.11.7's Lib/: each module's docstrings joined into a
document and cut into consecutive 256-piece windows, as retrieval corpora are chunked;
kept so every machine measures the same texts). Each output line is one paragraph cut after its --tokens-th word
piece of the model's tokenizer (special tokens not counted; the original text, not a
decoding), so a model with max_length >= tokens + 2 sees about that many (a cut inside
a word keeps its first pieces). Prints one JSON line.
"""
import argparse
import ast
import json
import os
import re
import sys
import sysconfig

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SHIPPED = os.path.join(REPO, "benches", "data", "passages.txt")


def documents_from_stdlib():
    """Per module, its docstrings of at least 20 words joined into one document (doctest
    lines and code blocks left out), in a fixed order."""
    lib = sysconfig.get_paths()["stdlib"]
    docs = []
    for root, dirs, files in os.walk(lib):
        dirs[:] = sorted(d for d in dirs if d not in ("test", "tests", "idlelib", "site-packages", "lib2to3"))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            try:
                tree = ast.parse(open(os.path.join(root, name), encoding="utf-8").read())
            except (SyntaxError, UnicodeDecodeError):
                continue
            parts = []
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                paras = [p.strip() for p in re.split(r"\n\s*\n", doc)]
                text = " ".join(p for p in paras if not p.startswith((">>>", "::", "$")))
                text = re.sub(r"\s+", " ", text).strip()
                if len(text.split()) >= 20:
                    parts.append(text)
            if parts:
                docs.append(" ".join(parts))
    return docs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--out")
    ap.add_argument("--make", action="store_true", help="rebuild the shipped source file from this Python's Lib/")
    args = ap.parse_args()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    count = lambda t: len(tok.encode(t, add_special_tokens=False).ids)  # noqa: E731
    if args.make:
        # Documents cut into consecutive windows of 256 word pieces, as passages are made
        # for retrieval.
        kept = []
        for doc in documents_from_stdlib():
            enc = tok.encode(doc, add_special_tokens=False)
            words, offsets = enc.tokens, enc.offsets
            start = 0
            while start + 256 <= len(words):
                # The original text of 256 pieces, from a word's first piece.
                kept.append(doc[offsets[start][0]:offsets[start + 255][1]])
                start += 256
                while start < len(words) and words[start].startswith("##"):
                    start += 1
        step = max(1, len(kept) // args.n)  # spread over the library, not its first modules
        kept = kept[::step][: args.n]
        os.makedirs(os.path.dirname(SHIPPED), exist_ok=True)
        with open(SHIPPED, "w", encoding="utf-8") as f:
            f.write("\n".join(kept) + "\n")
        print(json.dumps({"out": SHIPPED, "passages": len(kept), "python": sys.version.split()[0]}))
        return
    source = [line.strip() for line in open(SHIPPED, encoding="utf-8") if line.strip()][: args.n]
    lines = []
    for p in source:
        # The original text up to the end of the --tokens-th piece.
        offsets = tok.encode(p, add_special_tokens=False).offsets
        lines.append(p[: offsets[min(args.tokens, len(offsets)) - 1][1]])
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    mean = sum(count(t) for t in lines) / len(lines)
    print(json.dumps({"out": args.out, "texts": len(lines), "tokens": args.tokens, "mean_word_pieces": round(mean, 1)}))


if __name__ == "__main__":
    main()
