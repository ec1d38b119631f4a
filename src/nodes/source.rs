//! `source`: reads a table of a dataset in Arrow batches; `table: pairs` sends one batch
//! of training pairs per step, batch `t` at time `t`.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use timely::dataflow::InputHandle;
use timely::worker::Worker;

use super::Settings;
use crate::dataflow::{
    BatchStream, BuildCx, Feed, FeedStage, Operator, RunState, SourceInput, Time,
};
use crate::error::Result;
use crate::graph::{
    needs::Need, Access, CheckCx, DataSource, FileUse, InputRole, NodeKind, PlanCx, Planned,
    References, TableName, MAIN,
};
use crate::spec::InputFormat;
use crate::store::batch::Batch;
use crate::store::beir::{Dataset, Format, Table};
use crate::store::pairs::{answers_batch, pairs_batch, TrainingPairs};
use crate::store::tables;

/// Rows per batch when the memory estimate reads a table to size its rows and texts.
const SCAN_ROWS: usize = 8192;

/// Settings of `source`: reads one table of a dataset in Arrow batches.
///
/// It reads no node.
///
/// Writes `id`, `title`, `text` (corpus); `id`, `text` (queries); `query_id`,
/// `corpus_id`, `score` (qrels); `id`, `text`, `corpus_id`, `positives` (pairs, one
/// batch per step); `id`, `text`, `answer` (answers, one batch per step).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Name of an entry of the pipeline's `inputs`.
    pub dataset: String,
    /// Which table to read.
    #[serde(default)]
    pub table: TableName,
    /// For `table: qrels` and `table: pairs`, the split (`train`, `dev`, `test`, ...).
    #[serde(default)]
    pub split: Option<String>,
    /// Rows per Arrow batch; for `table: pairs`, queries per training step.
    #[serde(default = "default_batch")]
    #[schemars(range(min = 1))]
    pub batch_size: usize,
    /// For `table: pairs`: training steps (batches), cycling through the pairs in epochs;
    /// one epoch when absent.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub steps: Option<usize>,
    /// For `table: pairs`: reshuffle the pairs every epoch (seeded).
    #[serde(default = "default_shuffle")]
    pub shuffle: bool,
}

fn default_batch() -> usize {
    1024
}

fn default_shuffle() -> bool {
    true
}

impl Settings for Source {
    const TYPE: &'static str = "source";
    const ROLES: &'static [InputRole] = ROLES;

    fn validate(&self) -> freshen_operators::Result<()> {
        use freshen_operators::ranges::{at_least, field_error};
        at_least("batch_size", self.batch_size, 1)?;
        if let Some(steps) = self.steps {
            at_least("steps", steps, 1)?;
        }
        if self.table.per_split() && self.split.is_none() {
            let (table, example) = match self.table {
                TableName::Pairs => ("pairs", "train"),
                TableName::Answers => ("answers", "train"),
                _ => ("qrels", "test"),
            };
            return Err(field_error(
                "table",
                format!("`table: {table}` needs a `split` (expected e.g. split: {example})"),
            ));
        }
        Ok(())
    }
}

impl Source {
    /// The source node of the graph that reads the file a data error names (the
    /// dataset is validated whole, once, by its first reader).
    fn reader_of<'a>(&self, cx: &CheckCx<'a>, ds: &Dataset, e: &crate::Error) -> Option<&'a str> {
        let crate::Error::Data { file, .. } = e else {
            return None;
        };
        cx.graph.nodes().iter().find_map(|n| {
            let s = n.settings::<Source>()?;
            (s.dataset == self.dataset && &ds.path(&s.data_table()) == file)
                .then_some(n.id.as_str())
        })
    }

    /// A split the dataset has no qrels file for is an error at `split` (where the user
    /// named it, in the file or a `--set`), naming the splits there are.
    fn check_split(&self, cx: &CheckCx, ds: &Dataset) -> Result<()> {
        let Some(split) = self.split.as_ref().filter(|_| self.table.per_split()) else {
            return Ok(());
        };
        let file = ds.path(&self.data_table());
        if file.is_file() {
            return Ok(());
        }
        let splits = ds.splits().map_err(|e| self.at_path(cx, e))?;
        Err(cx.error(
            "split",
            format!(
                "split `{split}` is not in the dataset: no file {} (expected one of: {})",
                file.display(),
                match splits.is_empty() {
                    true => "none, the dataset has no qrels".to_string(),
                    false => splits.join(", "),
                }
            ),
        ))
    }

    /// Rows of `table` of its dataset, their bytes as Arrow batches, and the bytes of the
    /// texts of columns `fields` (joined by a space), read whole for the memory estimate.
    fn scan(&self, cx: &CheckCx, table: &Table, fields: &[String]) -> Option<(usize, f64, f64)> {
        let (mut rows, mut arrow, mut texts) = (0, 0.0, 0.0);
        for batch in self.open(cx).ok()?.read(table, SCAN_ROWS).ok()? {
            let batch = batch.ok()?;
            rows += batch.num_rows();
            arrow += batch.get_array_memory_size() as f64;
            texts += fields
                .iter()
                .filter_map(|f| batch.column_by_name(f)?.as_string_opt::<i32>())
                .map(|a| (a.value_data().len() + a.len()) as f64)
                .sum::<f64>();
        }
        Some((rows, arrow, texts))
    }

    /// `e` as an error at the dataset's `path`, in this node.
    fn at_path(&self, cx: &CheckCx, e: crate::Error) -> crate::Error {
        cx.spec().error(
            &format!("inputs.{}.path", self.dataset),
            Some(&cx.this().id),
            e.to_string(),
        )
    }
}

impl DataSource for Source {
    fn table(&self) -> TableName {
        self.table
    }

    /// The dataset's table this source reads (pairs: the qrels of its split).
    fn data_table(&self) -> Table {
        match self.table {
            TableName::Corpus => Table::Corpus,
            TableName::Queries => Table::Queries,
            TableName::Qrels | TableName::Pairs | TableName::Answers => {
                Table::Qrels(self.split.clone().unwrap_or_default())
            }
        }
    }

    /// Opens the dataset; a problem points at the dataset's `path`.
    fn open(&self, cx: &CheckCx) -> Result<Dataset> {
        let input = cx
            .spec()
            .pipeline
            .inputs
            .get(&self.dataset)
            .ok_or_else(|| {
                cx.error(
                    "dataset",
                    format!("dataset `{}` is not defined", self.dataset),
                )
            })?;
        let format = match input.format {
            InputFormat::Auto => None,
            InputFormat::Parquet => Some(Format::Parquet),
            InputFormat::Beir => Some(Format::Jsonl),
        };
        Dataset::open(&input.path, format).map_err(|e| self.at_path(cx, e))
    }

    /// The mean bytes of the texts its rows carry, columns `fields` joined: of the corpus
    /// for `table: corpus`, else of the queries, whose texts the other tables' rows join.
    fn text_bytes(&self, cx: &CheckCx, fields: &[String]) -> Option<f64> {
        let table = match self.table {
            TableName::Corpus => Table::Corpus,
            _ => Table::Queries,
        };
        let (rows, _, texts) = self.scan(cx, &table, fields)?;
        (rows > 0).then(|| texts / rows as f64)
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }
}

/// Its inputs, by role.
pub(crate) const ROLES: &[InputRole] = &[];

impl NodeKind for Source {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn data_source(&self) -> Option<&dyn DataSource> {
        Some(self)
    }

    fn roles(&self) -> &'static [InputRole] {
        ROLES
    }

    fn references(&self) -> References {
        References {
            dataset: Some(("dataset", self.dataset.clone())),
            ..References::default()
        }
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
        Vec::new()
    }

    fn outputs(&self, _cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        let schema = match self.table {
            TableName::Corpus => tables::corpus_schema(),
            TableName::Queries => tables::queries_schema(),
            TableName::Qrels => tables::qrels_schema(),
            TableName::Pairs => tables::pairs_schema(),
            TableName::Answers => tables::answers_schema(),
        };
        Ok(vec![(MAIN.to_string(), schema)])
    }

    /// Its table's rows as Arrow batches: as read, and as its readers keep them (the
    /// corpus's shards, the pairs, the evaluation's queries and judgements).
    fn memory(&self, cx: &CheckCx) -> Vec<crate::graph::Cost> {
        let Some((rows, bytes, _)) = self.scan(cx, &self.data_table(), &[]) else {
            return Vec::new();
        };
        vec![crate::graph::Cost {
            what: format!(
                "node {}: its table, 2 × {rows} rows as Arrow batches",
                cx.this().id
            ),
            bytes: 2.0 * bytes,
            per: crate::graph::Per::Leader,
            ..Default::default()
        }]
    }

    fn check_files(&self, cx: &CheckCx, rows: bool, seen: &mut Vec<String>) -> Result<()> {
        let ds = self.open(cx)?;
        if rows {
            if !seen.contains(&self.dataset) {
                seen.push(self.dataset.clone());
                ds.validate().map_err(|e| {
                    let node = self.reader_of(cx, &ds, &e).unwrap_or(&cx.this().id);
                    e.with_node(node)
                })?;
            }
            return Ok(());
        }
        self.check_split(cx, &ds)?;
        let mut tables = vec![self.data_table()];
        if self.table.per_step() {
            tables.push(Table::Queries);
        }
        for table in tables {
            ds.check_columns(&table).map_err(|e| self.at_path(cx, e))?;
        }
        if self.table == TableName::Answers {
            crate::store::pairs::check_answers(&ds).map_err(|e| self.at_path(cx, e))?;
        }
        Ok(())
    }

    /// Every table file of the dataset: an output must never replace one.
    fn files(&self, cx: &CheckCx) -> Vec<FileUse> {
        let Ok(ds) = self.open(cx) else {
            return Vec::new();
        };
        let mut tables = vec![Table::Corpus, Table::Queries];
        tables.extend(
            ds.splits()
                .unwrap_or_default()
                .into_iter()
                .map(Table::Qrels),
        );
        tables
            .iter()
            .map(|t| FileUse {
                at: format!("inputs.{}.path", self.dataset),
                path: ds.path(t),
                access: Access::Read,
            })
            .collect()
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let id = &cx.this().id;
        let dataset = self.open(&cx.check())?;
        let table = self.data_table();
        let rows = dataset.row_count(&table).map_err(|e| e.with_node(id))?;
        let pairs = match self.table {
            TableName::Pairs | TableName::Answers => {
                let split = self.split.clone().unwrap_or_default();
                let mut pairs =
                    TrainingPairs::load(&dataset, &split).map_err(|e| e.with_node(id))?;
                if self.table == TableName::Answers {
                    pairs = pairs.with_answers(&dataset).map_err(|e| e.with_node(id))?;
                }
                if pairs.is_empty() {
                    return Err(cx.error(
                        "split",
                        format!("split `{split}` has no query with a relevant document (expected training pairs)"),
                    ));
                }
                Some(Arc::new(PairsPlan {
                    answers: self.table == TableName::Answers,
                    steps: self
                        .steps
                        .unwrap_or_else(|| pairs.steps_per_epoch(self.batch_size)),
                    pairs,
                    batch_size: self.batch_size,
                    shuffle: self.shuffle,
                    seed: cx.graph.spec.pipeline.seed,
                }))
            }
            _ => None,
        };
        let steps = pairs.as_ref().map(|p| p.steps);
        Ok(Planned {
            operator: Box::new(SourceOp {
                dataset: Arc::new(dataset),
                table,
                batch_size: self.batch_size,
                rows,
                pairs,
                start: cx.start as Time,
            }),
            steps,
        })
    }

    fn settings_json(&self) -> serde_json::Value {
        super::json(self)
    }
}

/// The training pairs a `table: pairs` source feeds, one batch per step.
pub struct PairsPlan {
    /// The examples.
    pub pairs: TrainingPairs,
    /// Training steps.
    pub steps: usize,
    /// Queries per step.
    pub batch_size: usize,
    /// Reshuffle each epoch.
    pub shuffle: bool,
    /// The pipeline's seed.
    pub seed: u64,
    /// Whether it sends questions (`table: answers`) rather than pairs.
    pub answers: bool,
}

/// A source at run time.
struct SourceOp {
    dataset: Arc<Dataset>,
    table: Table,
    batch_size: usize,
    rows: usize,
    pairs: Option<Arc<PairsPlan>>,
    /// The time it starts sending at (a resumed run's first step).
    start: Time,
}

impl Operator for SourceOp {
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        let mut input: SourceInput = InputHandle::new();
        let stream = input.to_stream(cx.scope);
        input.advance_to(self.start);
        let node = cx.node.to_string();
        let feed: Box<dyn Feed> = match &self.pairs {
            Some(p) => Box::new(PairsFeed {
                input,
                plan: p.clone(),
                node,
            }),
            None => Box::new(TableFeed {
                input,
                dataset: self.dataset.clone(),
                table: self.table.clone(),
                batch_size: self.batch_size,
                rows: self.rows,
                node,
            }),
        };
        cx.assembly.feeds.push(feed);
        Ok(vec![(MAIN.to_string(), stream)])
    }
}

/// Sends this worker's share of a table: batch `b` goes to worker `b % peers`.
struct TableFeed {
    input: SourceInput,
    dataset: Arc<Dataset>,
    table: Table,
    batch_size: usize,
    rows: usize,
    node: String,
}

impl Feed for TableFeed {
    fn stage(&self) -> FeedStage {
        FeedStage::Sources
    }

    fn feed(mut self: Box<Self>, worker: &mut Worker, run: &RunState) {
        let (index, peers) = (worker.index(), worker.peers());
        let id = self.node.as_str();
        let bar = match index {
            0 => run.progress().quiet_bar(id, self.rows as u64),
            _ => indicatif::ProgressBar::hidden(),
        };
        match self.dataset.read(&self.table, self.batch_size) {
            Ok(reader) => {
                for (b, batch) in reader.enumerate() {
                    if run.failed() {
                        break;
                    }
                    match batch {
                        Ok(batch) if b % peers == index => {
                            bar.inc(batch.num_rows() as u64 * peers as u64);
                            run.count(id, |s| s.rows_out += batch.num_rows());
                            self.input.send(Batch(batch));
                            // Let the dataflow take each batch before reading the next.
                            worker.step();
                        }
                        Ok(_) => {}
                        Err(e) => run.fail(e.with_node(id)),
                    }
                }
            }
            Err(e) => run.fail(e.with_node(id)),
        }
        bar.finish_and_clear();
    }
}

/// Sends this worker's share of each step's training pairs, batch `t` at time `t`.
struct PairsFeed {
    input: SourceInput,
    plan: Arc<PairsPlan>,
    node: String,
}

impl Feed for PairsFeed {
    fn stage(&self) -> FeedStage {
        FeedStage::Sources
    }

    fn feed(mut self: Box<Self>, worker: &mut Worker, run: &RunState) {
        let (index, peers) = (worker.index(), worker.peers());
        let p = &self.plan;
        let start = *self.input.time() as usize;
        for step in start..p.steps {
            if run.failed() {
                break;
            }
            let rows = p.pairs.batch(step, p.batch_size, p.shuffle, p.seed);
            let mine: Vec<_> = rows
                .into_iter()
                .enumerate()
                .filter(|(r, _)| r % peers == index)
                .map(|(_, row)| row)
                .collect();
            self.input.advance_to(step as Time);
            let batch = match p.answers {
                true => answers_batch(&mine),
                false => pairs_batch(&mine),
            };
            match batch {
                Ok(b) => {
                    run.count(&self.node, |s| s.rows_out += b.num_rows());
                    self.input.send(Batch(b));
                }
                Err(e) => run.fail(e.with_node(&self.node)),
            }
            worker.step();
        }
    }
}
