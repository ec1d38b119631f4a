//! `encode`: embeds the text of its input rows.
//!
//! One node type, four run-time forms, decided when it is planned:
//! - plain inference over its input rows ([`infer`]);
//! - read by a `cache`: a differential group that embeds only the rows whose
//!   `(id, text_hash)` the cache's store lacks, so a re-run embeds only what changed
//!   ([`infer::cached`]); in training, also the cache's periodic full re-embedding;
//! - the query tower of a training graph: each step's queries, after the previous step's
//!   update ([`train::queries`]);
//! - with two inputs (a `sample` node and the corpus): the target tower on the targets
//!   each step touches ([`train::touched`]).

mod infer;
mod memory;
mod train;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use freshen_operators::Encoder;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

pub use infer::encode_rows;

use super::facts::EncoderFacts;
use super::text::default_fields;
use super::Settings;
use crate::dataflow::{BatchStream, BuildCx, Operator};
use crate::error::{Error, Result};
use crate::graph::needs::{self, Need};
use crate::graph::ports::{REFRESH, REUSED, SUBSET as SUBSET_PORT, TOUCHED_SUBSET as SUBSET};
use crate::graph::{
    CheckCx, InputRole, NodeKind, ParseCx, PlanCx, Planned, References, TableName, MAIN,
};
use crate::models::{Built, ModelCx, ModelRef, Role};
use crate::spec::LoadedSpec;
use crate::store::cache::EmbeddingStore;
use crate::store::tables::{self, col};

/// Settings of `encode`: embeds rows with a model.
///
/// Inputs: rows with `id` and the `fields` it embeds; or, for the touched targets, a
/// `sample` node and the corpus (only the targets the step touches are embedded).
///
/// Writes `id`, `text_hash`, `embedding`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Encode {
    /// The encoder: a name from `models:` (shared, trainable) or a model written here
    /// (`{kind: hashed, dim: 64}`); `{kind: hashed}` when absent.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub model: Value,
    /// Columns whose text is embedded, joined by a space (empty values skipped).
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    /// Texts per forward pass.
    #[serde(default = "default_batch")]
    #[schemars(range(min = 1))]
    pub batch_size: usize,
    /// `model`, read.
    #[serde(skip)]
    #[schemars(skip)]
    resolved: Option<ModelRef>,
}

fn default_batch() -> usize {
    256
}

impl Settings for Encode {
    const TYPE: &'static str = "encode";
    const ROLES: &'static [InputRole] = ROLES;

    fn validate(&self) -> freshen_operators::Result<()> {
        freshen_operators::ranges::at_least("batch_size", self.batch_size, 1)?;
        if self.fields.is_empty() {
            return Err(freshen_operators::ranges::field_error(
                "fields",
                "`fields` is empty (expected at least one column name)",
            ));
        }
        Ok(())
    }

    fn resolve(&mut self, cx: &ParseCx) -> Result<()> {
        self.resolved = Some(cx.model("model", &self.model)?);
        Ok(())
    }

    fn schema() -> serde_json::Value {
        let mut s = crate::models::schema_of::<Self>();
        if let Some(p) = s.get_mut("properties").and_then(|p| p.as_object_mut()) {
            let mut model = ModelRef::schema();
            if let (Some(m), Some(serde_json::Value::Object(old))) =
                (model.as_object_mut(), p.get("model"))
            {
                m.extend(
                    old.iter()
                        .filter(|(k, _)| *k == "description" || *k == "default")
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
            }
            p.insert("model".into(), model);
        }
        s
    }
}

impl Encode {
    /// The model it runs.
    pub fn model(&self) -> Result<&ModelRef> {
        self.resolved
            .as_ref()
            .ok_or_else(|| Error::invariant("an encode node whose model was not read"))
    }

    /// The name of its model, if it is one of `models:`.
    pub fn model_name(&self) -> Option<&str> {
        self.resolved.as_ref().and_then(ModelRef::name)
    }
}

/// Its inputs, by role.
pub(crate) const ROLES: &[InputRole] = &[
    InputRole::optional(
        "rows",
        "the rows to embed (`id` and the text fields); or else `sample` and `corpus`",
    ),
    InputRole::optional(
        "sample",
        "while training: the `sample` node whose step's targets are embedded (with `corpus`)",
    ),
    InputRole::optional(
        "corpus",
        "the corpus `source` that the sample's target ids are looked up in",
    ),
    InputRole::implied(
        "subset",
        ("sample", SUBSET_PORT),
        "the training subset the `sample` node draws (`subset`), embedded off the tape for h",
    ),
];

impl NodeKind for Encode {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn roles(&self) -> &'static [InputRole] {
        ROLES
    }

    /// One input is the rows; two are the sample and the corpus.
    fn positional(&self, types: &[&str]) -> Option<Vec<&'static str>> {
        match types.len() {
            1 => Some(vec!["rows"]),
            2 => Some(vec!["sample", "corpus"]),
            _ => None,
        }
    }

    fn references(&self) -> References {
        References {
            models: self
                .model_name()
                .map(|n| ("model", n.to_string(), Role::Encoder))
                .into_iter()
                .collect(),
            ..References::default()
        }
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
        vec![
            ("rows", needs::rows(&self.fields)),
            (
                "sample",
                vec![needs::text(col::CORPUS_ID), needs::id_list(col::NEGATIVES)],
            ),
            ("corpus", needs::rows(&self.fields)),
        ]
    }

    fn outputs(&self, cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        let dim = cx
            .model(self.model()?)
            .and_then(|m| m.output_dim())
            .unwrap_or(0);
        let mut out = vec![(MAIN.to_string(), tables::embeddings_schema(dim))];
        // The ports its `cache` reads (stored keys; refreshes while training), and the
        // training subset's embeddings for the loss where its sample draws one.
        let store = cx
            .consumers()
            .iter()
            .find_map(|&c| cx.graph.nodes()[c].kind.store());
        if let (Some(store), false) = (store, cx.has("sample")) {
            out.push((REUSED.to_string(), tables::keys_schema()));
            if store.refresh_every.is_some() {
                out.push((REFRESH.to_string(), tables::embeddings_schema(dim)));
            }
        }
        let sample = cx.producer_index("sample");
        if sample.is_some_and(|s| cx.graph.ports[s].iter().any(|(p, _)| p == SUBSET_PORT)) {
            out.push((SUBSET.to_string(), tables::embeddings_schema(dim)));
        }
        Ok(out)
    }

    fn check(&self, cx: &CheckCx) -> Result<()> {
        if cx.has("rows") == (cx.has("sample") || cx.has("corpus"))
            || cx.has("sample") != cx.has("corpus")
        {
            return Err(cx.error(
                "inputs",
                "`encode` takes `rows`, or else `sample` and `corpus` (expected `inputs: {rows: corpus}` or `inputs: {sample: negatives, corpus: corpus}`)",
            ));
        }
        if let ModelRef::Inline(m) = self.model()? {
            if m.role() != Role::Encoder {
                return Err(cx.error(
                    "model",
                    format!(
                        "{} cannot embed text (expected an encoder such as {{kind: hashed}})",
                        m.role().expected()
                    ),
                ));
            }
        }
        // Input 0 of two is a `sample` node: only it writes the `negatives` its needs name.
        if cx.has("sample") {
            let corpus = cx.producer_reads("corpus", TableName::Corpus);
            super::want(
                cx,
                "corpus",
                corpus,
                "a corpus `source`, where it finds their texts",
            )?;
        }
        Ok(())
    }

    /// A model written here: its weights, loading it, an inference batch; in training,
    /// the tape of each step's forwards (see [`memory`]).
    fn memory(&self, cx: &CheckCx) -> Vec<crate::graph::Cost> {
        match self.model() {
            Ok(ModelRef::Inline(m)) => memory::inline(cx, m),
            Ok(ModelRef::Named(name)) => memory::tape(cx, name, &self.fields).into_iter().collect(),
            Err(_) => Vec::new(),
        }
    }

    fn prints_counts(&self, cx: &CheckCx) -> bool {
        !cx.consumers()
            .iter()
            .any(|&c| cx.graph.nodes()[c].kind.store().is_some())
    }

    fn check_files(&self, cx: &CheckCx, rows: bool, _seen: &mut Vec<String>) -> Result<()> {
        if let (false, ModelRef::Inline(m)) = (rows, self.model()?) {
            m.check_files(&ModelCx {
                spec: cx.spec(),
                path: format!("{}.model", LoadedSpec::node_path(cx.node)),
                node: Some(&cx.this().id),
            })?;
        }
        Ok(())
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let plan = self.plan_op(cx)?;
        Ok(Planned::operator(plan))
    }

    fn settings_json(&self) -> serde_json::Value {
        let mut v = super::json(self);
        if let (Some(o), Some(m)) = (v.as_object_mut(), &self.resolved) {
            o.insert("model".into(), m.settings_json());
        }
        v
    }
}

/// The encoder an inference form runs.
#[derive(Clone)]
enum EncoderUse {
    /// Written in the node: one instance shared by the process's workers, never trained.
    Inline(Arc<dyn Encoder>),
    /// A model of `models:`: each worker's own replica.
    Named(String),
}

/// A cache's periodic re-embedding, run by the encode node that feeds it.
#[derive(Clone)]
struct Refresh {
    model: String,
    every: usize,
    steps: usize,
}

/// What a training form of the node needs.
#[derive(Clone)]
struct TrainEncode {
    model: String,
    fields: Vec<String>,
    batch_size: usize,
    /// Keep the forward for `update` (the node feeds a loss and its model trains).
    record: bool,
}

/// The node's run-time form.
enum EncodeOp {
    /// Plain inference.
    Infer {
        encoder: EncoderUse,
        fields: Vec<String>,
        batch_size: usize,
        /// The input table's rows, when the graph can count them (the progress total).
        expected: Option<usize>,
    },
    /// Inference of the rows a cache's store lacks.
    Cached {
        encoder: EncoderUse,
        fields: Vec<String>,
        batch_size: usize,
        store: EmbeddingStore,
        cache_id: String,
        refresh: Option<Refresh>,
    },
    /// The query tower.
    Queries(TrainEncode),
    /// The target tower on the touched targets.
    Touched(TrainEncode),
}

impl Encode {
    fn plan_op(&self, cx: &PlanCx) -> Result<EncodeOp> {
        let i = cx.node;
        let training = cx.graph.training.as_ref();
        let train = |model: &str| TrainEncode {
            model: model.to_string(),
            fields: self.fields.clone(),
            batch_size: self.batch_size,
            record: training.is_some_and(|t| t.records(i)),
        };
        let cache = cx
            .graph
            .consumers(i)
            .iter()
            .copied()
            .find(|&c| cx.graph.nodes()[c].kind.store().is_some());
        let (encoder, fingerprint, dim) = match self.model()? {
            ModelRef::Named(name) if cx.this().roles.contains(&"sample") => {
                return Ok(EncodeOp::Touched(train(name)))
            }
            ModelRef::Named(name) if cache.is_none() && training.is_some_and(|t| t.is_gated(i)) => {
                return Ok(EncodeOp::Queries(train(name)))
            }
            ModelRef::Named(name) => {
                let (fp, dim) =
                    cx.models.encoder(name).cloned().ok_or_else(|| {
                        Error::invariant(format!("encoder `{name}` was not built"))
                    })?;
                (EncoderUse::Named(name.clone()), fp, dim)
            }
            ModelRef::Inline(m) => {
                let built = m
                    .build(0)
                    .map_err(|e| Error::from(e).with_node(&cx.this().id))?;
                let enc: Arc<dyn Encoder> = match built {
                    Built::Encoder(e) => {
                        let e: Arc<dyn freshen_operators::train::TrainableEncoder> = Arc::from(e);
                        e
                    }
                    Built::Corrector(_) | Built::Reader(_) => {
                        return Err(Error::invariant("an inline non-encoder in an encode node"))
                    }
                };
                let (fp, dim) = (enc.fingerprint().to_string(), enc.dim());
                (EncoderUse::Inline(enc), fp, dim)
            }
        };
        let Some(c) = cache else {
            cx.facts.publish(i, EncoderFacts { store: None });
            return Ok(EncodeOp::Infer {
                encoder,
                fields: self.fields.clone(),
                batch_size: self.batch_size,
                expected: super::upstream_rows(&cx.check(), "rows"),
            });
        };
        let cache_node = &cx.graph.nodes()[c];
        let path = cache_node
            .kind
            .store()
            .map(|s| s.path.to_path_buf())
            .ok_or_else(|| Error::invariant("a cache node without a store"))?;
        let store = EmbeddingStore::new(&path, &fingerprint, dim);
        let refresh = match (&encoder, training.and_then(|t| t.refresh(c))) {
            (EncoderUse::Named(model), Some(every)) => Some(Refresh {
                model: model.clone(),
                every,
                steps: cx.steps,
            }),
            _ => None,
        };
        cx.facts.publish(
            i,
            EncoderFacts {
                store: Some(store.clone()),
            },
        );
        Ok(EncodeOp::Cached {
            encoder,
            fields: self.fields.clone(),
            batch_size: self.batch_size,
            store,
            cache_id: cache_node.id.clone(),
            refresh,
        })
    }
}

impl Operator for EncodeOp {
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        let encoder = |cx: &BuildCx, e: &EncoderUse| -> Result<std::rc::Rc<dyn Encoder>> {
            Ok(match e {
                EncoderUse::Inline(e) => std::rc::Rc::new(infer::Shared(e.clone())),
                EncoderUse::Named(m) => cx.models()?.encoder(m)?,
            })
        };
        match self {
            EncodeOp::Infer {
                encoder: e,
                fields,
                batch_size,
                expected,
            } => {
                let enc = encoder(cx, e)?;
                let out = infer::plain(cx, enc, fields.clone(), *batch_size, *expected)?;
                Ok(vec![(MAIN.to_string(), out)])
            }
            EncodeOp::Cached {
                encoder: e,
                fields,
                batch_size,
                store,
                cache_id,
                refresh,
            } => {
                let enc = encoder(cx, e)?;
                let group = infer::CachedGroup {
                    encoder: enc,
                    fields: fields.clone(),
                    batch_size: *batch_size,
                    store: store.clone(),
                    cache_id: cache_id.clone(),
                };
                let mut ports = infer::cached(cx, group)?;
                if let Some(r) = refresh {
                    let spec = TrainEncode {
                        model: r.model.clone(),
                        fields: fields.clone(),
                        batch_size: *batch_size,
                        record: false,
                    };
                    ports.push((
                        REFRESH.to_string(),
                        train::refresh(cx, spec, r.every, r.steps)?,
                    ));
                }
                Ok(ports)
            }
            EncodeOp::Queries(spec) => {
                Ok(vec![(MAIN.to_string(), train::queries(cx, spec.clone())?)])
            }
            EncodeOp::Touched(spec) => {
                let (main, subset) = train::touched(cx, spec.clone())?;
                let mut ports = vec![(MAIN.to_string(), main)];
                ports.extend(subset.map(|s| (SUBSET.to_string(), s)));
                Ok(ports)
            }
        }
    }
}
