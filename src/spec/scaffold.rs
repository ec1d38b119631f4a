//! The training pipeline that `freshen new` writes for a dataset.
//!
//! It is a shipped recipe with the dataset's path, name and splits filled in: with hashed
//! towers that of `pipelines/quickstart.yaml`, with a BERT model folder that of
//! `pipelines/wordnet-minilm-drift.yaml` (the guarded stale cache, the recipe chosen on
//! dev). Its nodes and models are those files' own, node for node, which a test holds to,
//! so a recipe changed there is a test failure here rather than a written pipeline that
//! silently trains another way. Each block carries a short comment, since the file is a
//! starting point a user reads and edits.

use std::fmt::Write;

/// The splits a training pipeline reads: it trains on one, picks its best step on
/// another and reports the third at that step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splits {
    /// The split of the training pairs.
    pub train: String,
    /// The split the best step is picked on.
    pub dev: String,
    /// The held-out split reported at the best step.
    pub test: String,
}

/// What a pipeline is written for.
#[derive(Debug, Clone)]
pub struct Scaffold {
    /// The pipeline's name, also its out folder's (`out/<name>`).
    pub name: String,
    /// The pipeline file, for the commands in its header.
    pub file: String,
    /// The dataset folder, as the pipeline writes it (`vars.data`).
    pub data: String,
    /// A sentence-transformers folder both towers start from; hashed towers when absent.
    pub model: Option<String>,
    /// The splits it reads.
    pub splits: Splits,
    /// Documents in the corpus: the negatives searched per query stay below it.
    pub corpus_rows: usize,
    /// Lines for the header comment (how the file and its dataset were made).
    pub notes: Vec<String>,
}

/// The settings in which the two recipes differ.
struct Recipe {
    /// The shipped pipeline it follows.
    follows: &'static str,
    /// The `models:` entries, with their comments.
    models: &'static str,
    /// Queries per step.
    batch_size: usize,
    /// Training steps.
    steps: usize,
    /// Negatives searched per query.
    k: usize,
    /// Whether each query's candidates are re-scored by the current h (reads the stale
    /// cache as input `stale`).
    rescore: bool,
    /// The loss's `corrector` setting.
    corrector: &'static str,
    /// The `update` node's learning rates, one setting a line.
    rates: &'static [&'static str],
    /// The files the `eval` node writes, one setting a line.
    files: &'static [&'static str],
}

/// `pipelines/quickstart.yaml`: hashed towers, the corrector trained on the drift.
const HASHED: Recipe = Recipe {
    follows: "pipelines/quickstart.yaml",
    models: "  # The towers, f for queries and g for targets: hashed bags of words, separate weights.
  f: {kind: hashed, dim: 128}
  g: {kind: hashed, dim: 128}
  # The corrector h, trained to map the stale cache B to what g embeds now.
  h: {kind: corrector, width: 512, depth: 1}
",
    batch_size: 64,
    steps: 500,
    k: 16,
    rescore: false,
    corrector: "mse",
    rates: &[
        "lr: 1.0e-3",
        "embedding_lr: 2.0e-4",
        "corrector_lr: 1.0e-3",
    ],
    files: &[
        "diagnostics: true        # stale and corrected caches against the fresh one",
        "trec: ${out}/run.trec",
        "rankings: ${out}/rankings.parquet",
        "checkpoint: ${out}/checkpoint",
        "embeddings: ${out}/embeddings.parquet",
        "corrected_embeddings: ${out}/corrected-embeddings.parquet   # h(B), searched with no re-embedding",
    ],
};

/// `pipelines/wordnet-minilm-drift.yaml`: both towers fine-tuned from the model, the
/// guarded stale cache (h frozen).
const BERT: Recipe = Recipe {
    follows: "pipelines/wordnet-minilm-drift.yaml",
    models: "  # Separate towers, both from the model folder, every layer trainable.
  f: {kind: bert, path: \"${model}\"}
  g: {kind: bert, path: \"${model}\"}
  # Frozen: the guarded stale cache, the recipe that did best on dev (freshen's
  # BENCHMARKS.md, \"The recipe a user should run\").
  # --set models.h.frozen=false trains h on the drift.
  h: {kind: corrector, width: 512, depth: 1, frozen: true}
",
    batch_size: 32,
    steps: 100,
    k: 7,
    rescore: true,
    corrector: "{listwise: {weight: 1.0}}",
    rates: &["lr: 1.0e-4", "corrector_lr: 1.0e-3"],
    files: &[
        "checkpoint: ${out}/checkpoint",
        "rankings: ${out}/rankings.parquet",
    ],
};

/// The pipeline's text.
pub fn render(s: &Scaffold) -> String {
    let recipe = match s.model {
        Some(_) => &BERT,
        None => &HASHED,
    };
    [
        header(s, recipe),
        top(s, recipe),
        training(s, recipe),
        negatives(s, recipe),
        evaluation(s, recipe),
    ]
    .concat()
}

/// The comment at the top: what it trains, how it was made, how to run it.
fn header(s: &Scaffold, r: &Recipe) -> String {
    let towers = match &s.model {
        Some(m) => format!("both towers fine-tuned from {m}"),
        None => "hashed towers".to_string(),
    };
    let mut h = format!(
        "# Train a dual encoder on {}, {towers}.\n# The recipe is {}'s.\n",
        s.name, r.follows
    );
    for note in &s.notes {
        match note.is_empty() {
            true => h.push_str("#\n"),
            false => {
                let _ = writeln!(h, "# {note}");
            }
        }
    }
    let _ = write!(
        h,
        "#
#   freshen check {file}
#   freshen run {file}
#
# Paths are relative to the folder freshen runs in. Change a setting for one run with
# --set, e.g. --set nodes.pairs.steps=50 or --set vars.out=out/other.
",
        file = s.file
    );
    h
}

/// The pipeline's name, seed, vars, dataset and models.
fn top(s: &Scaffold, r: &Recipe) -> String {
    let model = match &s.model {
        Some(m) => format!("  model: {}\n", scalar(m)),
        None => String::new(),
    };
    format!(
        "version: 1
name: {name}
seed: 7
vars:
  data: {data}
  out: {out}
{model}
# The dataset, in the BEIR layout.
inputs:
  data:
    path: ${{data}}

models:
{models}",
        name = scalar(&s.name),
        data = scalar(&s.data),
        out = scalar(&format!("out/{}", s.name)),
        models = r.models,
    )
}

/// The sources, the stale cache and its corrected view, and the query tower.
fn training(s: &Scaffold, r: &Recipe) -> String {
    format!(
        "
nodes:
  # The corpus, and the training pairs: {batch} queries of split `{train}` per step.
  - id: corpus
    type: source
    dataset: data
    table: corpus
  - id: pairs
    type: source
    dataset: data
    table: pairs
    split: {train}
    batch_size: {batch}
    steps: {steps}

  # The stale cache B = g(Y) at step 0, through the persistent store.
  - id: initial
    type: encode
    inputs: [corpus]
    model: g
    fields: [title, text]
  - id: cache
    type: cache
    inputs: [initial]

  # h(B): what the negatives are searched in.
  - id: corrected
    type: correct
    inputs: [cache]
    model: h
    apply_every: 10

  - id: queries
    type: encode
    inputs: [pairs]
    model: f
",
        train = scalar(&s.splits.train),
        batch = r.batch_size,
        steps = r.steps,
    )
}

/// The negatives, the targets re-embedded, the loss and the update.
fn negatives(s: &Scaffold, r: &Recipe) -> String {
    // `k` negatives plus the positive must fit in the corpus.
    let k = r.k.min(s.corpus_rows.saturating_sub(1));
    let (stale, rescore) = match r.rescore {
        true => (", stale: cache", "\n    rescore: true"),
        false => ("", ""),
    };
    let rates: String = r.rates.iter().map(|l| format!("\n    {l}")).collect();
    format!(
        "  # Hard negatives: the top {k} of h(B) for each query, in-batch ones too.
  - id: negatives
    type: sample
    inputs: {{queries: queries, search: corrected, pairs: pairs{stale}}}
    k: {k}{rescore}
    # Drop candidates scoring above the positive minus 0.05: likely unlabelled positives.
    margin: 0.05
  # Only the targets this step touches are re-embedded.
  - id: targets
    type: encode
    inputs: {{sample: negatives, corpus: corpus}}
    model: g
    fields: [title, text]
  # h on the step's targets in B: what it learns to match.
  - id: drift
    type: correct
    inputs: {{cache: cache, sample: negatives}}
    model: h

  - id: loss
    type: loss
    inputs: {{queries: queries, targets: targets, sample: negatives, drift: drift}}
    beta: 20
    corrector: {corrector}
  - id: update
    type: update
    inputs: {{grads: loss, stats: loss.stats}}{rates}
",
        corrector = r.corrector,
    )
}

/// The evaluation on dev and test, and the files the run writes.
fn evaluation(s: &Scaffold, r: &Recipe) -> String {
    let files: String = r.files.iter().map(|l| format!("\n    {l}")).collect();
    format!(
        "
  # Every 50 steps: dev Recall@20 picks the best step; test is reported at it.
  - id: dev_queries
    type: source
    dataset: data
    table: queries
  - id: dev
    type: source
    dataset: data
    table: qrels
    split: {dev}
  - id: test
    type: source
    dataset: data
    table: qrels
    split: {test}
  - id: evaluate
    type: eval
    inputs: {{trained: update, corpus: corpus, queries: dev_queries, dev: dev, test: test, cache: cache}}
    models: {{query: f, target: g, corrector: h}}
    every: 50
    select_by: recall_at_20{files}

  # A row per step (metrics.parquet), and the run's summary.
  - id: write_metrics
    type: sink
    inputs: [evaluate.steps]
    output: metrics
  - id: write_summary
    type: sink
    inputs: [evaluate]
    output: summary

outputs:
  metrics:
    path: ${{out}}/metrics.parquet
  summary:
    path: ${{out}}/summary.parquet
",
        dev = scalar(&s.splits.dev),
        test = scalar(&s.splits.test),
    )
}

/// `text` as a YAML string: as it is when that reads back as the same string, else
/// double-quoted (JSON's quoting is YAML's).
pub fn scalar(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./-+@".contains(c);
    let special = [
        "true", "false", "null", "yes", "no", "on", "off", "y", "n", "~",
    ];
    let plain = text.chars().all(safe)
        && text.starts_with(|c: char| c.is_ascii_alphanumeric() || "_./".contains(c))
        && text.chars().any(|c| c.is_ascii_alphabetic())
        && !special.contains(&text.to_ascii_lowercase().as_str());
    match plain {
        true => text.to_string(),
        false => serde_json::to_string(text).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use serde_yaml::Value;

    use super::*;

    fn scaffold(model: Option<&str>) -> Scaffold {
        Scaffold {
            name: "wordnet-sample".into(),
            file: "wordnet-sample.yaml".into(),
            data: "data/wordnet-sample".into(),
            model: model.map(String::from),
            splits: Splits {
                train: "train".into(),
                dev: "dev".into(),
                test: "test".into(),
            },
            corpus_rows: 10_000,
            notes: vec!["Written by a test.".into()],
        }
    }

    /// The shipped pipeline's section `key`, its dataset named `data` as in a written one.
    fn shipped(text: &str, key: &str) -> Value {
        let text = text.replace("dataset: wordnet", "dataset: data");
        let v: Value = serde_yaml::from_str(&text).unwrap();
        v[key].clone()
    }

    /// The written pipelines train as the shipped recipes do: the same nodes with the
    /// same settings, the same models and outputs.
    #[test]
    fn written_pipelines_are_the_shipped_recipes_node_for_node() {
        let cases = [
            (None, include_str!("../../pipelines/quickstart.yaml")),
            (
                Some("models/all-MiniLM-L6-v2"),
                include_str!("../../pipelines/wordnet-minilm-drift.yaml"),
            ),
        ];
        for (model, text) in cases {
            let written: Value = serde_yaml::from_str(&render(&scaffold(model))).unwrap();
            assert_eq!(written["nodes"].as_sequence().map(Vec::len), Some(17));
            for key in ["models", "nodes", "outputs"] {
                assert_eq!(written[key], shipped(text, key), "{key} of {model:?}");
            }
            assert_eq!(written["vars"]["data"], "data/wordnet-sample");
            assert_eq!(written["inputs"]["data"]["path"], "${data}");
        }
    }

    #[test]
    fn splits_names_and_a_small_corpus_are_filled_in() {
        let mut s = scaffold(None);
        s.splits.dev = "validation".into();
        s.name = "true".into();
        s.data = "my data".into();
        s.corpus_rows = 5;
        let v: Value = serde_yaml::from_str(&render(&s)).unwrap();
        let node = |id: &str| {
            v["nodes"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|n| n["id"] == id)
                .unwrap()
                .clone()
        };
        assert_eq!(node("dev")["split"], "validation");
        assert_eq!(node("negatives")["k"], 4);
        assert_eq!(v["name"], "true");
        assert_eq!(v["vars"]["data"], "my data");
    }
}
