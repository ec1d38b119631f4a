#!/usr/bin/env python3
"""Write tests/fixtures/minilm-parity.json: reference embeddings of fixed
sentences from sentence-transformers, for checking the Rust encoder against.

  .venv-peers/bin/python scripts/parity_fixture.py [--model models/all-MiniLM-L6-v2] \
      [--out tests/fixtures/minilm-parity.json]

Runs offline (HF_HUB_OFFLINE=1) on CPU in float32. The embeddings are what
SentenceTransformer.encode returns through the model's own pipeline
(Transformer -> mean Pooling -> Normalize), rounded to 7 significant digits.
"tokens" is each sentence's length in word pieces as the model sees it: with
[CLS] and [SEP], after truncation at max_seq_length.
"""
import argparse
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# A gloss-like paragraph long enough (> 256 word pieces) that truncation at
# max_seq_length 256 is exercised.
LONG = " ".join(
    f"({i}) a member of a large family of flowering plants, herbs, shrubs and trees whose "
    f"fruit is a legume; variety number {i * 17} grows in temperate regions;"
    for i in range(1, 13)
)

SENTENCES = [
    "a",
    "dog",
    "moribund (adjective)",
    "full-length, uncut (adjective)",
    "being on the point of death; breathing your last",
    "(used of texts) not shortened",
    "a domesticated carnivorous mammal that typically has a long snout, an acute sense of smell, "
    "non-retractable claws, and a barking, howling, or whining voice",
    "good humor, good humour, good temper, amiability (noun); temper, mood, humor, humour",
    "Hello, World! How's it going?? (fine...) -- yes; no: maybe / perhaps [sic] {ok} <tag> @user #hash",
    "Café crème brûlée à la carte: a naïve façade in São Paulo, Zürich and Ångström",
    "ÉCOLE NORMALE SUPÉRIEURE vs école normale supérieure",
    "In 1984, 3.14159 kg of 42 apples cost $7.50 (or 6,25 €) on 2024-02-29 at 10:30pm",
    "The QUICK Brown fOX jumps over the LaZy DoG",
    "東京 is the capital of 日本; Москва is the capital of Россия",
    "unbelievably antidisestablishmentarianism hyperparameterization",
    "tab\tseparated   and    multiple     spaces\nand a newline",
    "emoji 🙂 and symbols ™ © ° ± ×",
    "don't can't won't it's o'clock rock'n'roll",
    "  leading and trailing whitespace  ",
    LONG,
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "minilm-parity.json"))
    args = ap.parse_args()

    import numpy as np
    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    model = SentenceTransformer(args.model, device="cpu")
    model.eval()
    names = [type(m).__name__ for m in model]
    normalized = "Normalize" in names
    print(f"parity_fixture: pipeline {names}, max_seq_length {model.max_seq_length}", file=sys.stderr)

    # Token counts exactly as encode() sees them: ST's own tokenize() (which
    # truncates at max_seq_length and adds [CLS]/[SEP]), one sentence at a time
    # so that padding does not count.
    prep = getattr(model, "preprocess", None) or model.tokenize  # tokenize() before ST 6
    tokens = [int(prep([s])["attention_mask"].sum()) for s in SENTENCES]
    with torch.inference_mode():
        emb = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True,
                           normalize_embeddings=not normalized, show_progress_bar=False)
    emb = emb.astype(np.float32)
    assert emb.shape == (len(SENTENCES), 384), emb.shape
    assert max(tokens) == model.max_seq_length, "the long sentence must hit max_seq_length"

    doc = {
        "model": "all-MiniLM-L6-v2",
        "generator": "scripts/parity_fixture.py",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "normalized": True,
        "pooling": "mean",
        "sentences": SENTENCES,
        "tokens": tokens,
        "embeddings": [[float(f"{x:.7g}") for x in row] for row in emb.tolist()],
    }
    # One embedding per line keeps the file small and diffs readable.
    head = {k: v for k, v in doc.items() if k != "embeddings"}
    text = json.dumps(head, ensure_ascii=False, indent=1)[:-2]
    rows = ",\n  ".join(json.dumps(r) for r in doc["embeddings"])
    text += ',\n "embeddings": [\n  ' + rows + "\n ]\n}\n"
    json.loads(text)  # well-formed
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, args.out)
    print(json.dumps({"out": os.path.relpath(args.out, REPO), "sentences": len(SENTENCES),
                      "tokens": tokens, "bytes": len(text.encode())}))


if __name__ == "__main__":
    main()
