//! `cache`: keeps embeddings in a persistent store so unchanged rows are never embedded
//! again, and emits the full table downstream (the stale cache B of training).
//!
//! Its input is an `encode` node, which embeds only the rows the store lacks (see
//! `encode`'s cached form). The cache writes the store's next version on the leader
//! worker: the fresh rows as they arrive, then the stored rows still current.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Concat, Operator as _};

use super::facts::EncoderFacts;
use super::Settings;
use crate::dataflow::{BatchStream, BuildCx, NodeStats, Operator};
use crate::error::{Error, Result};
use crate::graph::needs::{self, Need};
use crate::graph::ports::{REFRESH, REUSED};
use crate::graph::{Access, CheckCx, FileUse, InputRole, NodeKind, PlanCx, Planned, Store, MAIN};
use crate::store::batch::{self, Batch};
use crate::store::cache::{EmbeddingStore, Part};
use crate::store::parquet_io::AtomicParquetWriter;
use crate::store::tables::{self, col};

/// Settings of `cache`: the persistent embedding store, keyed by (id, text hash,
/// encoder fingerprint), and the stale cache B it holds.
///
/// Writes the full embedding table: `id`, `text_hash`, `embedding`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// Folder of the persistent store, shared between runs and pipelines.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// When training: re-embed the whole corpus with the current target tower every this
    /// many steps (the ANCE-style baseline; 1 is the oracle). Absent: never.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub refresh_every: Option<usize>,
    /// Stored rows the corpus no longer has (other corpora, older texts) kept for a later
    /// run, the most recently used first; default: as many as the corpus has rows, so
    /// going back to the previous corpus embeds nothing. 0 keeps the current corpus only.
    #[serde(default)]
    pub retain: Option<usize>,
}

fn default_path() -> PathBuf {
    PathBuf::from(".freshen/cache")
}

impl Settings for Cache {
    const TYPE: &'static str = "cache";
    const ROLES: &'static [InputRole] = ROLES;

    fn validate(&self) -> freshen_operators::Result<()> {
        match self.refresh_every {
            Some(r) => freshen_operators::ranges::at_least("refresh_every", r, 1),
            None => Ok(()),
        }
    }
}

/// Its inputs, by role.
pub(crate) const ROLES: &[InputRole] = &[
    InputRole::required("vectors", "the `encode` node whose vectors the store keeps"),
    InputRole::implied(
        "reused",
        ("vectors", REUSED),
        "the keys of the store's rows still current, which the `vectors` node did not re-embed",
    ),
    InputRole::implied(
        "refresh",
        ("vectors", REFRESH),
        "the corpus re-embedded at each refresh (`refresh_every`), while training",
    ),
];

impl NodeKind for Cache {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn roles(&self) -> &'static [InputRole] {
        ROLES
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
        vec![(
            "vectors",
            vec![
                needs::text(col::ID),
                needs::hash(col::TEXT_HASH),
                needs::vector(col::EMBEDDING),
            ],
        )]
    }

    fn outputs(&self, cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        Ok(vec![(
            MAIN.to_string(),
            tables::embeddings_schema(cx.input_dim("vectors")),
        )])
    }

    fn check(&self, cx: &CheckCx) -> Result<()> {
        if !cx.producer_is("vectors", "encode") || cx.port("vectors") != MAIN {
            return Err(cx.input_error(
                "vectors",
                "a cache must read an `encode` node directly (expected inputs: {vectors: <encode id>})",
            ));
        }
        Ok(())
    }

    fn store(&self) -> Option<Store<'_>> {
        Some(Store {
            path: &self.path,
            refresh_every: self.refresh_every,
        })
    }

    /// Its shard of the store's rows: as read from the store, and as written back.
    fn memory(&self, cx: &CheckCx) -> Vec<crate::graph::Cost> {
        super::cache_copies(
            cx,
            "vectors",
            2.0,
            "its store's rows as read and as written",
            crate::graph::Per::Shard,
        )
    }

    fn files(&self, cx: &CheckCx) -> Vec<FileUse> {
        vec![FileUse {
            at: format!("{}.path", crate::spec::LoadedSpec::node_path(cx.node)),
            path: self.path.clone(),
            access: Access::Store,
        }]
    }

    fn prints_counts(&self, _cx: &CheckCx) -> bool {
        true
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let producer = cx.check().producer_index("vectors").unwrap_or(cx.node);
        let store = cx
            .facts
            .of::<EncoderFacts>(producer)
            .and_then(|f| f.store.clone())
            .ok_or_else(|| Error::invariant("a cache planned before its encode node"))?;
        // A resumed run that starts on a refresh step searches the refreshed cache only.
        let refreshed_at_start = cx.start > 0
            && cx
                .graph
                .training
                .as_ref()
                .and_then(|t| t.refresh(cx.node))
                .is_some_and(|every| cx.start.is_multiple_of(every));
        Ok(Planned::operator(CacheOp {
            store,
            id: cx.this().id.clone(),
            producer: cx.graph.nodes()[producer].id.clone(),
            emit_stored: !refreshed_at_start,
            retain: self.retain,
        }))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::json(self)
    }
}

/// A cache at run time.
struct CacheOp {
    store: EmbeddingStore,
    id: String,
    /// The encode node it reads (whose counter of encoded rows is the cache's too).
    producer: String,
    /// Whether the store's rows go downstream (all but a resumed run starting on a
    /// refresh step, where the refreshed rows replace them).
    emit_stored: bool,
    retain: Option<usize>,
}

impl Operator for CacheOp {
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        let fresh = cx.input("vectors")?;
        let reused = cx
            .input_if("reused")
            .ok_or_else(|| Error::invariant("a cache whose encode node gave no stored keys"))?;
        let refresh = cx.input_if("refresh");
        let how = Writing {
            emit: self.emit_stored,
            retain: self.retain,
        };
        let out = write_store(cx, fresh, reused, self.store.clone(), how);
        Ok(vec![(
            MAIN.to_string(),
            match refresh {
                Some(r) => out.concat(r),
                None => out,
            },
        )])
    }

    /// Rows replaced = stored − reused − dropped; encoded is the encode node's.
    fn after_run(&self, stats: &mut BTreeMap<String, NodeStats>) {
        let encoded = stats.get(&self.producer).map_or(0, |s| s.encoded);
        let s = stats.entry(self.id.clone()).or_default();
        s.encoded = encoded;
        s.replaced = s.stored.saturating_sub(s.reused + s.dropped);
    }
}

/// Writes the store's next version (fresh rows as they arrive, then the stored rows still
/// current) and emits the full table downstream. All on the leader worker.
fn write_store<'s>(
    cx: &BuildCx<'_, 's>,
    fresh: BatchStream<'s>,
    reused: BatchStream<'s>,
    store: EmbeddingStore,
    how: Writing,
) -> BatchStream<'s> {
    let emit = how.emit;
    let (leader, node, shared) = (cx.leader(), cx.node.clone(), cx.run.clone());
    let start = cx.start();
    let to_leader = Exchange::new(|_: &Batch| 0u64);
    let keys_to_leader = Exchange::new(|_: &Batch| 0u64);
    fresh.binary_frontier::<_, CapacityContainerBuilder<Vec<Batch>>, _, _, _, _>(
        reused,
        to_leader,
        keys_to_leader,
        "Cache",
        move |mut cap, _| {
            // The table goes out at the run's first step (a resumed run's, or 0).
            cap.downgrade(&start);
            let mut cap = Some(cap);
            let mut writer: Option<AtomicParquetWriter> = None;
            let mut keep: HashSet<(String, u64)> = HashSet::new();
            let mut fresh_rows = 0;
            move |(fresh, f1), (reused, f2), output| {
                let Some(c) = cap.as_ref() else {
                    fresh.for_each(|_, _| {});
                    reused.for_each(|_, _| {});
                    return;
                };
                fresh.for_each(|_, data| {
                    for b in data.drain(..) {
                        if let Err(e) = write(&mut writer, &store, &b.0) {
                            shared.fail(e.with_node(&node));
                        }
                        shared.count(&node, |s| s.rows_out += b.0.num_rows());
                        fresh_rows += b.0.num_rows();
                        if emit {
                            output.session(c).give(b);
                        }
                    }
                });
                reused.for_each(|_, data| {
                    for b in data.drain(..) {
                        if let Err(e) = collect_keys(&b.0, &mut keep) {
                            shared.fail(e.with_node(&node));
                        }
                    }
                });
                if f1.is_empty() && f2.is_empty() {
                    if leader && !shared.failed() {
                        let kept = keep.len();
                        let bound = how.retain.unwrap_or(fresh_rows + kept);
                        let result = next_version(&store, &keep, writer.take(), bound, &mut |b| {
                            if emit {
                                output.session(c).give(Batch(b));
                            }
                        });
                        match result {
                            Ok(()) => shared.count(&node, |s| {
                                s.reused += kept;
                                s.rows_out += kept;
                            }),
                            Err(e) => shared.fail(e.with_node(&node)),
                        }
                    }
                    cap = None;
                }
            }
        },
    )
}

fn collect_keys(b: &RecordBatch, keep: &mut HashSet<(String, u64)>) -> Result<()> {
    if b.num_rows() == 0 {
        return Ok(());
    }
    let ids = batch::strings(b, col::ID)?;
    let hashes = batch::hashes(b)?;
    for r in 0..b.num_rows() {
        keep.insert((ids.value(r).to_string(), hashes.value(r)));
    }
    Ok(())
}

fn write(
    writer: &mut Option<AtomicParquetWriter>,
    store: &EmbeddingStore,
    b: &RecordBatch,
) -> Result<()> {
    if writer.is_none() {
        *writer = Some(store.writer(Part::Current)?);
    }
    match writer.as_mut() {
        Some(w) => w.write(b),
        None => Ok(()),
    }
}

/// Finishes the store's next version and commits it: the current file gets the fresh
/// rows (already in `current`) and every stored row whose key is in `keep` (passed to
/// `emit` too); the retained file gets up to `bound` of the other stored rows, in store
/// order (the most recently used first: each version writes its corpus's rows first).
///
/// The store is a cache, not an output: its new version is committed as soon as it is
/// complete, so a run killed later never embeds the corpus again.
fn next_version(
    store: &EmbeddingStore,
    keep: &HashSet<(String, u64)>,
    current: Option<AtomicParquetWriter>,
    bound: usize,
    emit: &mut dyn FnMut(RecordBatch),
) -> Result<()> {
    let mut current = match current {
        Some(w) => w,
        None => store.writer(Part::Current)?,
    };
    let mut retained = store.writer(Part::Retained)?;
    let mut left = bound;
    for part in [Part::Current, Part::Retained] {
        for b in store.read_part(part, 8192)? {
            let b = b?;
            let ids = batch::strings(&b, col::ID)?;
            let hashes = batch::hashes(&b)?;
            let (mut mine, mut other) = (Vec::new(), Vec::new());
            for r in 0..b.num_rows() {
                let kept = keep.contains(&(ids.value(r).to_string(), hashes.value(r)));
                mine.push(Some(kept));
                other.push(Some(!kept && left > 0));
                left -= usize::from(!kept && left > 0);
            }
            let kept = filter_record_batch(&b, &BooleanArray::from(mine))?;
            if kept.num_rows() > 0 {
                current.write(&kept)?;
                emit(kept);
            }
            let others = filter_record_batch(&b, &BooleanArray::from(other))?;
            if others.num_rows() > 0 {
                retained.write(&others)?;
            }
        }
    }
    current.finish()?.commit()?;
    retained.finish()?.commit()
}

/// How the cache writes the store's next version.
#[derive(Clone, Copy)]
struct Writing {
    /// Whether the store's current rows go downstream.
    emit: bool,
    /// At most this many stored rows outside the corpus are kept (default: the corpus's).
    retain: Option<usize>,
}
