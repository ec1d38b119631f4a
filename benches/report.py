#!/usr/bin/env python3
"""Renders BENCHMARKS.md's tables from the result files under benches/results/.

Each benchmark script appends JSON lines to its file (benches/results/<family>.jsonl):
one line per table row, with `table` (the table's name below), the row's fields, and
`command`, `machine` and `commit`. BENCHMARKS.md marks where each table goes:

    <!-- table: claim-full -->
    ...(rewritten by this script)...
    <!-- /table -->

Everything outside the markers is prose, written by hand. Rows are keyed (TABLES' `key`):
a later line with the same key updates the row's fields, so rerunning a benchmark
rewrites its rows. Lines with a `source` field were transcribed from the diary-style
BENCHMARKS.md when the tables moved here; a rerun replaces them.

    python3 benches/report.py           # rewrites BENCHMARKS.md in place
    python3 benches/report.py --check   # exit 1 if BENCHMARKS.md is not what it would write
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benches" / "results"
DOC = ROOT / "BENCHMARKS.md"
MARK = re.compile(r"<!-- table: ([a-z0-9-]+) -->\n.*?<!-- /table -->", re.S)


def table(file, columns, align=None, key=1):
    """A table: its result file, its columns as "header = field[:format]" separated by
    " | ", the Markdown alignment row (left-aligned when None), and what keys a row: the
    fields named, or that many leading columns."""
    cols = []
    for c in columns.split(" | "):
        header, field = c.rsplit(" = ", 1)
        field, _, fmt = field.partition(":")
        cols.append((header, field, fmt))
    align = align or "|" + "---|" * len(cols)
    if isinstance(key, int):
        key = tuple(f for _, f, _ in cols[:key])
    return {"file": file, "cols": cols, "align": align, "key": key}


ARM = "arm = arm | runs = runs | R@1 = r1 | R@5 = r5 | R@20 = r20 | R@100 = r100 | MRR@10 = mrr10"
FWD = "refresh fwd = refresh_fwd | touched fwd = touched_fwd | eval fwd = eval_fwd | total fwd = total_fwd"
FWD_S = "refresh fwd = refresh_fwd | refresh s = refresh_s | touched fwd = touched_fwd | eval fwd = eval_fwd | total fwd = total_fwd"
SPEED = "|---|---|---:|---:|---:|---:|"

TABLES = {
    "claim-full": table("arms", f"{ARM} | {FWD} | seconds = seconds"),
    "claim-sample": table("arms", f"{ARM} | {FWD} | seconds = seconds"),
    "claim-diagnostics": table("quickstart", " = metric | 100 = step_100 | 200 = step_200 | 300 = step_300 | 400 = step_400 | 500 = step_500"),
    "claim-changes": table("quickstart", "change (full set, corrector arm, seed 1) = change | dev R@20 = dev_r20 | test R@20 = test_r20 | corrected staleness = corrected_staleness | KL(P‖P_h) at 500 = kl_h_500 | top-10 overlap of h(B) at 500 = overlap_h_500 | wall s = wall_s"),
    "hard-negatives": table("quickstart", "settings = settings | best step = best_step | dev R@20 = dev_r20 | test R@1 = test_r1 | test R@20 = test_r20 | test R@100 = test_r100 | test MRR@10 = test_mrr10 | negatives/query = negatives_per_query"),
    "corrector-apply": table("speed", "hidden width = width | one application over 117,659 × 128 = ms_per_application"),
    "quickstart-diagnostics": table("quickstart", "after step = step | dev R@20 = dev_r20 | staleness = staleness | corrected staleness = corrected_staleness | KL(P‖P_stale) = kl_stale | KL(P‖P_h) = kl_h | top-10 overlap stale = overlap_stale | top-10 overlap h(B) = overlap_h"),
    "workers": table("workers", f"{ARM} | touched fwd = touched_fwd | total fwd = total_fwd | seconds = seconds"),
    "workers-timing": table("workers", "build = build | wall `-w 2` = wall_w2 | wall `-w 1` = wall_w1 | wall ratio = wall_ratio | CPU ratio = cpu_ratio | peak `-w 2` = peak_w2 | peak `-w 1` = peak_w1"),
    "million-topk": table("arms", f"{ARM} | {FWD_S} | seconds = seconds"),
    "million-guard": table("arms", f"{ARM} | {FWD_S} | seconds = seconds"),
    "scale": table("scale", "targets = targets | workers = workers | s / step = s_per_step | shard rows (worker 0) = shard_rows | held GB (per worker) = held_gb | peak GB (per process) = peak_gb | `check`'s estimate GB = estimate_gb | run s = run_s", key=2),
    "recipe-long": table("recipe", "arm = arm | seed = seed | dev-selected step = best_step | dev R@20 = dev_r20 | test R@20 = test_r20 | test R@1 = test_r1 | dev R@20 by step = dev_by_step | training forwards = training_fwd:{:,} | seconds = seconds:{:,}", "|---|---:|---:|---:|---:|---:|---|---:|---:|", key=("arm", "seed")),
    "recipe": table("recipe", "arm = label | guard = guard | dev R@20, seed {seeds} = dev_r20 | dev R@20, mean ± std = dev_spread | test R@20, seed {seeds} = test_r20 | test R@20, mean ± std = test_spread | test R@1, seed {seeds} = test_r1 | training forwards = training_fwd:{:,} | seconds (seed 1) = seconds:{:,}", "|---|---|---|---|---|---|---|---:|---:|", key=("arm", "guard", "seed")),
    "minilm": table("arms", f"{ARM} | {FWD_S} | seconds = seconds"),
    "drift-regime": table("arms", "steps = steps | staleness, stale arm (mean) = staleness_stale | staleness, refresh-10 = staleness_refresh10 | dev R@20 stale = dev_r20_stale | dev R@20 refresh-10 = dev_r20_refresh10 | gap = gap", "|---|---:|---:|---:|---:|---:|"),
    "drift-levers": table("arms", "arm = arm | test R@20, seeds 1 / 2 / 3 = test_r20_seeds | mean ± std = test_r20 | test R@1, seeds 1 / 2 / 3 = test_r1_seeds | mean ± std = test_r1 | dev R@20 at step 100 (seeds 1 / 3) = dev_r20_seeds | training fwd (with the initial 10,000) = training_fwd", "|---|---|---:|---|---:|---|---:|"),
    "drift-diagnostics": table("arms", "arm = arm | top-10 overlap with fresh (49 / 99) = overlap | KL(P‖P_cache) (49 / 99) = kl | staleness of touched targets, steps 50-99 = staleness"),
    "drift-listwise": table("arms", "arm = arm | test R@20, seeds 1 / 2 / 3 = test_r20_seeds | mean ± std = test_r20 | R@1 mean ± std = r1 | R@5 = r5 | R@100 = r100 | MRR@10 = mrr10 | dev R@20 at step 100, seeds 1 / 2 / 3 (mean) = dev_r20_seeds | corrected staleness, steps 50-99 = corrected_staleness | training fwd (with the initial 10,000) = training_fwd | h(B) R@20 / R@1, % of re-embedded = deploy_share | seconds (mean) = seconds", "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|"),
    "drift-gpu": table("arms", "arm = arm | seeds = runs | dev R@20 at the selected step (per seed; mean) = dev_r20_seeds | test R@20 per seed = test_r20_seeds | R@1 = r1 | R@5 = r5 | R@20 = r20 | R@100 = r100 | MRR@10 = mrr10 | staleness: touched / corrected = staleness | refresh fwd = refresh_fwd | training fwd = training_fwd | h(B) R@20 · R@1, % of re-embedded (mean) = deploy_share | h(B) R@20, absolute = deploy_r20 | seconds per seed = seconds_seeds", "|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|"),
    "quickstart-levers": table("quickstart", "arm = arm | R@1 = r1 | R@20 = r20 | MRR@10 = mrr10 | touched fwd = touched_fwd | subset fwd = subset_fwd | h(B) R@1, % of re-embedded = deploy_share_r1 | h(B) R@20, % of re-embedded = deploy_share_r20", "|---|---:|---:|---:|---:|---:|---:|---:|"),
    "synthetic": table("synthetic", "h (parameters) = parameters | a = amplitude | 10 targets = kl_10 | 30 = kl_30 | 100 = kl_100 | 300 = kl_300 | 1,000 = kl_1000", key=2),
    "rlm-sample": table("rlm", "arm = label | R@1 = r1 | R@5 = r5 | R@20 = r20 | R@100 = r100 | EM = em | answer NLL = answer_nll | refresh fwd = refresh_fwd | touched fwd = touched_fwd | total fwd = total_fwd", key=("arm",)),
    "rlm-full": table("rlm", "arm = label | R@1 = r1 | R@20 = r20 | EM = em | answer NLL = answer_nll | refresh fwd = refresh_fwd | training fwd (initial + refresh + touched) = training_fwd | total fwd = total_fwd", key=("arm",)),
    "rlm-recipe": table("rlm", "arm = label | runs = runs | R@1 = r1 | R@20 = r20 | EM = em | answer NLL = answer_nll | refresh fwd = refresh_fwd | training fwd (initial + refresh + touched) = training_fwd | total fwd = total_fwd", key=("arm",)),
    "memory": table("memory", "pipeline = pipeline:`pipelines/{}.yaml` | estimate = estimate_bytes:bytes | measured peak = peak_bytes:bytes | estimate / peak = ratio:{:.2f}", "|---|---:|---:|---:|"),
    "speed-encode": table("speed", "passages = passages | batch = batch | sentence-transformers (sent/s; rounds) = st_sent_per_s | freshen (sent/s; rounds) = freshen_sent_per_s | freshen tokens/s = freshen_tokens_per_s | freshen / ST = ratio", SPEED, key=2),
    "speed-step": table("speed", "training step, 32 q × 8 targets = texts | PyTorch (s) = torch_step_s | freshen (s) = freshen_step_s | PyTorch / freshen = ratio | peak MB PyTorch / freshen = peak_mb", "|---|---:|---:|---:|---|"),
    "speed-topk": table("speed", "exact top-10, 64 q × 200k × 384 = peer | peer (q/s) = peer_q_per_s | freshen (q/s) = freshen_q_per_s | freshen / peer = ratio", "|---|---:|---:|---:|"),
    "adamw": table("speed", "build = build | `adamw_s` (per step) = adamw_s | `step_s` = step_s | peak RSS = peak_rss | losses = losses", "|---|---:|---:|---:|---|"),
    "roof": table("roof", "what = what | 1 thread (GFLOP/s) = gflops_1thread | 2 threads (GFLOP/s) = gflops_2threads", "|---|---:|---:|"),
    "gpu-correctness": table("gpu", "check = check | figure = figure"),
    "gpu-speed": table("gpu", "work = work | peer = peer_s:gpu | freshen = freshen_s:gpu | ratio = ratio:{:.2f}x", "|---|---:|---:|---:|"),
}


def fmt(value, how):
    """A cell: strings as written (transcribed cells keep their exact text), numbers by the
    column's format ("bytes", "gpu", or a str.format pattern), None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, str) and how not in ("bytes",) and not how.startswith("`"):
        return value
    if how == "bytes":
        mib = value / 2**20
        return f"{mib:.0f} MB" if mib < 1024 else f"{mib / 1024:.1f} GB"
    if how == "gpu":
        return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"
    if how:
        return how.format(value)
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:,}" if isinstance(value, int) else str(value)


def load(file):
    """The lines of benches/results/<file>.jsonl, in order."""
    path = RESULTS / f"{file}.jsonl"
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def rows_of(name, spec):
    """The table's rows: its lines merged by key, in the order keys first appear."""
    rows = {}
    for line in load(spec["file"]):
        if line.get("table", spec["file"]) != name:
            continue
        k = tuple(str(line.get(f)) for f in spec["key"])
        rows.setdefault(k, {}).update(line)
    for row in rows.values():
        row.setdefault("label", row.get("arm"))
    return list(rows.values())


def recipe_rows(lines):
    """The recipe grid: one line per arm and seed in, one row per arm out, each figure as
    `seed 1 / seed 2 / ...`; training forwards and seconds are the lowest seed's."""
    seeds = sorted({l["seed"] for l in lines if l.get("seed") is not None})
    arms = {}
    for l in lines:
        arms.setdefault((l["arm"], l.get("guard")), []).append(l)
    out = []
    for runs in arms.values():
        by_seed = {r.get("seed"): r for r in runs}
        first = by_seed.get(min((s for s in by_seed if s is not None), default=None), runs[0])
        row = dict(first)
        for f in ("dev_r20", "test_r20", "test_r1"):
            if None in by_seed:
                row[f] = fmt(by_seed[None].get(f), "")
            else:
                row[f] = " / ".join(fmt(by_seed.get(s, {}).get(f), "") for s in seeds)
        for f, spread in (("dev_r20", "dev_spread"), ("test_r20", "test_spread")):
            row[spread] = mean_std([r.get(f) for s, r in by_seed.items() if s is not None])
        out.append(row)
    return out, " / ".join(str(s) for s in seeds)


def mean_std(values):
    """`mean ± std (n seeds)` of the figures given (sample std), or `—` under two."""
    xs = [float(v) for v in values if v not in (None, "", "—")]
    if len(xs) < 2:
        return "—"
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5
    return f"{m:.1f} ± {sd:.1f} ({len(xs)})"


def provenance(rows, label):
    """The line above a table: command, machine and commit. Where rows differ, the value
    most rows share comes first, and each other value names its rows."""
    parts = []
    for field, name in (("command", "Command"), ("machine", "Machine"), ("commit", "Commit")):
        seen = {}
        for r in rows:
            short = str(r.get(label)).split(" (")[0]
            rs = seen.setdefault(r.get(field) or "not recorded", [])
            if short not in rs:
                rs.append(short)
        quote = "" if field == "machine" else "`"
        groups = sorted(seen.items(), key=lambda kv: -len(kv[1]))
        each = [f"{quote}{groups[0][0]}{quote}"]
        each += [f"{quote}{v}{quote} ({', '.join(rs)})" for v, rs in groups[1:]]
        parts.append(f"{name}: {'; '.join(each)}.")
    return " ".join(parts)


def render(name):
    """The text between a table's markers."""
    spec = TABLES[name]
    rows = rows_of(name, spec)
    cols = spec["cols"]
    lines = rows
    if name == "recipe":
        rows, seeds = recipe_rows(rows)
        cols = [(h.replace("{seeds}", seeds), f, x) for h, f, x in cols]
        lines = [dict(l, label=f"{l.get('label')}, seed {l['seed']}") if l.get("seed") == max(
            (x.get("seed") or 0) for x in lines) else l for l in lines]
    if not rows:
        return f"(no lines for table `{name}` in benches/results/{spec['file']}.jsonl yet)\n"
    out = [provenance(lines, cols[0][1]), ""]
    out.append("| " + " | ".join(h for h, _, _ in cols) + " |" if cols[0][0] else
               "| | " + " | ".join(h for h, _, _ in cols[1:]) + " |")
    out.append(spec["align"])
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(f), x) for _, f, x in cols) + " |")
    return "\n".join(out) + "\n"


def rewrite(text):
    """BENCHMARKS.md with every marked table rendered afresh."""
    def one(m):
        name = m.group(1)
        if name not in TABLES:
            sys.exit(f"report: BENCHMARKS.md marks a table `{name}` that report.py does not know")
        return f"<!-- table: {name} -->\n{render(name)}<!-- /table -->"
    return MARK.sub(one, text)


def main():
    text = DOC.read_text()
    new = rewrite(text)
    if "--check" in sys.argv[1:]:
        if new != text:
            print("BENCHMARKS.md is stale: run python3 benches/report.py", file=sys.stderr)
            sys.exit(1)
        return
    if new != text:
        DOC.write_text(new)


if __name__ == "__main__":
    main()
