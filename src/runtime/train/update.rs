//! `update`: from the loss's gradients of embedding rows to new weights, the same on every
//! worker.
//!
//! Two operators. The first, on each worker, takes the step's forwards off the tape and
//! turns the row gradients into weight gradients ([`Trainable::backward`]). Their results
//! are broadcast, so the second, on every worker, sums all workers' gradients in worker
//! order (the same sum everywhere, bit for bit), averages them, clips them and steps
//! AdamW. It then emits the step's metrics row (worker 0) and the tick that the feedback
//! edge carries to the next step (every worker).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, ListArray, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema, UInt32Type, UInt64Type};
use candle_core::{Device, Tensor};
use freshen_operators::train::{
    AdamW, AdamWConfig, Decay, Gradients, HostGrad, Schedule, Trainable,
};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::Scope;

use super::{rows_of, tick, TrainState};
use crate::error::{Error, Result};
use crate::runtime::dataflow::{BatchStream, Time};
use crate::runtime::shared::Shared;
use crate::runtime::stepwise::{stepwise, Route};
use crate::spec::{self, UpdateSpec};
use crate::store::batch::{self, Batch};
use crate::store::tables::{self, col};

/// The schema of one worker's weight gradients: one row per parameter.
fn partial_schema() -> Arc<Schema> {
    let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
    Arc::new(Schema::new(vec![
        Field::new("worker", DataType::UInt64, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("param", DataType::Utf8, false),
        Field::new("shape", list(DataType::UInt64), false),
        Field::new("ids", list(DataType::UInt32), true),
        Field::new("values", list(DataType::Float32), false),
    ]))
}

fn list<T: Array + 'static>(lengths: Vec<usize>, values: T, nulls: Option<Vec<bool>>) -> ArrayRef {
    let field = Arc::new(Field::new("item", values.data_type().clone(), true));
    Arc::new(ListArray::new(
        field,
        OffsetBuffer::from_lengths(lengths),
        Arc::new(values),
        nulls.map(Into::into),
    ))
}

fn partial_batch(worker: usize, grads: &[(String, HostGrad)]) -> Result<Batch> {
    let shapes: Vec<u64> = grads
        .iter()
        .flat_map(|(_, g)| g.shape.iter().map(|&s| s as u64))
        .collect();
    let ids: Vec<u32> = grads
        .iter()
        .flat_map(|(_, g)| g.ids.iter().flatten().copied())
        .collect();
    let values: Vec<f32> = grads
        .iter()
        .flat_map(|(_, g)| g.values.iter().copied())
        .collect();
    Ok(Batch(RecordBatch::try_new(
        partial_schema(),
        vec![
            Arc::new(UInt64Array::from(vec![worker as u64; grads.len()])) as ArrayRef,
            Arc::new(StringArray::from_iter_values(
                grads.iter().map(|(m, _)| m.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                grads.iter().map(|(_, g)| g.param.as_str()),
            )),
            list(
                grads.iter().map(|(_, g)| g.shape.len()).collect(),
                UInt64Array::from(shapes),
                None,
            ),
            list(
                grads
                    .iter()
                    .map(|(_, g)| g.ids.as_ref().map_or(0, Vec::len))
                    .collect(),
                UInt32Array::from(ids),
                Some(grads.iter().map(|(_, g)| g.ids.is_some()).collect()),
            ),
            list(
                grads.iter().map(|(_, g)| g.values.len()).collect(),
                arrow::array::Float32Array::from(values),
                None,
            ),
        ],
    )?))
}

/// `(worker, model, gradient)` rows of a partial batch.
fn read_partial(b: &RecordBatch) -> Result<Vec<(u64, String, HostGrad)>> {
    let bad = || Error::Other("malformed gradient batch".into());
    let worker = b
        .column(0)
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(bad)?;
    let model = batch::strings(b, "model")?;
    let param = batch::strings(b, "param")?;
    let shape = b.column(3).as_list_opt::<i32>().ok_or_else(bad)?;
    let ids = b.column(4).as_list_opt::<i32>().ok_or_else(bad)?;
    let values = b.column(5).as_list_opt::<i32>().ok_or_else(bad)?;
    (0..b.num_rows())
        .map(|r| {
            let s = shape.value(r);
            let s = s.as_primitive_opt::<UInt64Type>().ok_or_else(bad)?;
            let v = values.value(r);
            let v = v.as_primitive_opt::<Float32Type>().ok_or_else(bad)?;
            let i = if ids.is_null(r) {
                None
            } else {
                let i = ids.value(r);
                Some(
                    i.as_primitive_opt::<UInt32Type>()
                        .ok_or_else(bad)?
                        .values()
                        .to_vec(),
                )
            };
            Ok((
                worker.value(r),
                model.value(r).to_string(),
                HostGrad {
                    param: param.value(r).to_string(),
                    shape: s.values().iter().map(|&x| x as usize).collect(),
                    ids: i,
                    values: v.values().to_vec(),
                },
            ))
        })
        .collect()
}

/// The row gradients of `node`'s forwards, summed per id: `(id → gradient)`.
fn row_grads(batches: &[Batch]) -> Result<HashMap<(String, String), Vec<f32>>> {
    let mut out: HashMap<(String, String), Vec<f32>> = HashMap::new();
    for b in rows_of(batches) {
        let nodes = batch::strings(b, col::NODE)?;
        let ids = batch::strings(b, col::ID)?;
        let (values, d) = batch::vectors_of(b, col::GRAD)?;
        for r in 0..b.num_rows() {
            let g = out
                .entry((nodes.value(r).to_string(), ids.value(r).to_string()))
                .or_insert_with(|| vec![0.0; d]);
            for (a, x) in g.iter_mut().zip(&values[r * d..(r + 1) * d]) {
                *a += x;
            }
        }
    }
    Ok(out)
}

/// What `update` needs beyond its settings.
pub struct UpdatePlan {
    /// Nodes whose forwards are on the tape.
    pub taped: Vec<String>,
    /// Models that train, with their `lr_scale`, and whether each is a corrector.
    pub models: BTreeMap<String, (f64, bool)>,
    /// Steps of the run.
    pub steps: usize,
}

/// The update. Inputs: the loss's gradients and its statistics. Port 0: one metrics row
/// per step (worker 0); port 1: the tick of each finished step (every worker).
#[allow(clippy::too_many_arguments)]
pub fn update<'s>(
    scope: Scope<'s, Time>,
    grads: BatchStream<'s>,
    stats: BatchStream<'s>,
    spec: UpdateSpec,
    plan: UpdatePlan,
    state: Rc<TrainState>,
    node: Rc<str>,
    shared: Arc<Shared>,
) -> Vec<BatchStream<'s>> {
    let worker = scope.index();
    let peers = scope.peers();
    let local_state = state.clone();
    let taped = plan.taped.clone();
    // 1. Each worker: row gradients → weight gradients, from its own tape.
    let backward = move |t: Time, inputs: Vec<Vec<Batch>>| {
        let rows = row_grads(&inputs[0])?;
        let mut per_model: BTreeMap<String, Gradients> = BTreeMap::new();
        for n in &taped {
            for entry in local_state.take(n, t) {
                let (r, d) = entry
                    .recorded
                    .output
                    .dims2()
                    .map_err(|e| Error::Compute(e.into()))?;
                let mut used = std::collections::HashSet::new();
                let mut g = vec![0f32; r * d];
                let mut any = false;
                for (i, id) in entry.ids.iter().enumerate() {
                    if let Some(v) = rows.get(&(n.clone(), id.clone())) {
                        if used.insert(id.clone()) {
                            g[i * d..(i + 1) * d].copy_from_slice(v);
                            any = true;
                        }
                    }
                }
                if !any {
                    continue;
                }
                let grad_out = Tensor::from_vec(g, (r, d), &Device::Cpu)
                    .map_err(|e| Error::Compute(e.into()))?;
                let grads = match local_state.encoders.get(&entry.model) {
                    Some(m) => m.backward(&entry.recorded, &grad_out)?,
                    None => local_state
                        .corrector(&entry.model)?
                        .backward(&entry.recorded, &grad_out)?,
                };
                per_model
                    .entry(entry.model.clone())
                    .or_default()
                    .accumulate(grads)?;
            }
        }
        let mut host = Vec::new();
        for (model, g) in &per_model {
            host.extend(g.to_host()?.into_iter().map(|h| (model.clone(), h)));
        }
        let mut out = vec![(0, partial_batch(worker, &host)?)];
        let touched = local_state.take_touched(t);
        for b in rows_of(&inputs[1]) {
            out.push((1, Batch(with_touched(b, touched)?)));
        }
        Ok(out)
    };
    let parts = stepwise(
        scope,
        "Backward",
        vec![(grads, Route::Local), (stats, Route::Local)],
        2,
        backward,
        None,
        node.clone(),
        shared.clone(),
    );
    let mut parts = parts.into_iter();
    let (partials, stats) = (parts.next().expect("port 0"), parts.next().expect("port 1"));

    // 2. Every worker: sum in worker order, clip, step.
    let schedule = Schedule {
        warmup: spec.warmup,
        total: plan.steps,
        decay: match spec.decay {
            spec::Decay::Constant => Decay::Constant,
            spec::Decay::Linear => Decay::Linear,
            spec::Decay::Cosine => Decay::Cosine,
        },
    };
    let mut optimisers: BTreeMap<String, AdamW> = plan
        .models
        .iter()
        .map(|(name, &(_, corrector))| {
            let cfg = AdamWConfig {
                weight_decay: if corrector {
                    spec.corrector_weight_decay
                } else {
                    spec.weight_decay
                },
                ..AdamWConfig::default()
            };
            (name.clone(), AdamW::new(cfg))
        })
        .collect();
    let bar = if worker == 0 {
        shared.steps_bar(plan.steps as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut last = Instant::now();
    let apply = move |t: Time, inputs: Vec<Vec<Batch>>| {
        let mut parts: Vec<(u64, String, HostGrad)> = Vec::new();
        for b in rows_of(&inputs[0]) {
            parts.extend(read_partial(b)?);
        }
        parts.sort_by_key(|p| p.0);
        let mut per_model: BTreeMap<String, Vec<HostGrad>> = BTreeMap::new();
        for (_, model, g) in parts {
            per_model.entry(model).or_default().push(g);
        }
        let mut grads: BTreeMap<String, Gradients> = BTreeMap::new();
        for (model, parts) in per_model {
            let mut g = Gradients::from_host(parts, &Device::Cpu)?;
            g.scale(1.0 / peers as f64)?;
            grads.insert(model, g);
        }
        let factor = schedule.factor(t as usize);
        let mut norms = [0f64; 2];
        let mut groups: [Vec<&mut Gradients>; 2] = [Vec::new(), Vec::new()];
        for (model, g) in grads.iter_mut() {
            let corrector = plan.models.get(model).is_some_and(|m| m.1);
            norms[corrector as usize] += g.norm()?.powi(2);
            groups[corrector as usize].push(g);
        }
        for (k, group) in groups.iter_mut().enumerate() {
            let norm = norms[k].sqrt();
            norms[k] = norm;
            if let Some(max) = spec.clip.filter(|&c| norm > c) {
                for g in group.iter_mut() {
                    g.scale(max / (norm + 1e-12))?;
                }
            }
        }
        for (model, g) in &grads {
            let Some(&(scale, corrector)) = plan.models.get(model) else {
                continue;
            };
            let Some(opt) = optimisers.get_mut(model) else {
                continue;
            };
            if corrector {
                let h = state.corrector(model)?;
                let lr = spec.corrector_lr * factor * scale;
                opt.step(&h.params(), g, &|_| lr)?;
            } else {
                let m = state.encoder(model)?;
                let sparse = m.sparse_params();
                let (lr, table_lr) = (spec.lr * factor * scale, spec.embedding_lr * factor * scale);
                opt.step(&m.params(), g, &|p| {
                    if sparse.iter().any(|s| s == p) {
                        table_lr
                    } else {
                        lr
                    }
                })?;
            }
        }
        bar.inc(1);
        let seconds = last.elapsed().as_secs_f64();
        last = Instant::now();
        let mut out = vec![(1, tick())];
        if worker == 0 {
            let row = metrics_row(
                t,
                &inputs[1],
                &spec,
                factor,
                norms,
                plan.models.values().any(|m| m.1),
                seconds,
            )?;
            out.push((0, Batch(row)));
        }
        if t as usize + 1 >= plan.steps {
            bar.finish_and_clear();
        }
        Ok(out)
    };
    stepwise(
        scope,
        "Apply",
        vec![
            (partials.broadcast(), Route::Local),
            (stats.broadcast(), Route::Local),
        ],
        2,
        apply,
        None,
        node,
        shared,
    )
}

/// The loss statistics row with a `touched_forwards` column added.
fn with_touched(b: &RecordBatch, touched: u64) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("touched_forwards", DataType::UInt64, false));
    let mut columns = b.columns().to_vec();
    columns.push(Arc::new(UInt64Array::from(vec![touched; b.num_rows()])));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// One row of [`tables::step_schema`] from every worker's statistics of step `t`.
fn metrics_row(
    t: Time,
    stats: &[Batch],
    spec: &UpdateSpec,
    factor: f64,
    norms: [f64; 2],
    has_corrector: bool,
    seconds: f64,
) -> Result<RecordBatch> {
    let (mut queries, mut candidates, mut touched) = (0u64, 0u64, 0u64);
    let mut sums: [(f64, f64); 4] = [(0.0, 0.0); 4];
    for b in rows_of(stats) {
        let u = |name: &str| -> Result<u64> {
            Ok(b.column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .ok_or_else(|| Error::Other(format!("statistics lack `{name}`")))?
                .value(0))
        };
        let q = u("queries")?;
        queries += q;
        candidates += u("candidates")?;
        touched += u("touched_forwards")?;
        for (k, name) in [
            "retriever_loss",
            "corrector_loss",
            "staleness",
            "corrected_staleness",
        ]
        .iter()
        .enumerate()
        {
            if let Some(c) = b
                .column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<Float64Type>())
            {
                if !c.is_null(0) {
                    sums[k].0 += c.value(0) * q as f64;
                    sums[k].1 += q as f64;
                }
            }
        }
    }
    let mean = |k: usize| (sums[k].1 > 0.0).then(|| sums[k].0 / sums[k].1);
    let f = |v: Option<f64>| Arc::new(Float64Array::from(vec![v])) as ArrayRef;
    Ok(RecordBatch::try_new(
        tables::step_schema(),
        vec![
            Arc::new(UInt64Array::from(vec![t])) as ArrayRef,
            Arc::new(UInt64Array::from(vec![queries])),
            Arc::new(UInt64Array::from(vec![candidates])),
            f(Some(mean(0).unwrap_or(f64::NAN))),
            f(mean(1)),
            f(mean(2)),
            f(mean(3)),
            f(Some(spec.lr * factor)),
            f(Some(spec.corrector_lr * factor)),
            f(Some(norms[0])),
            f(has_corrector.then_some(norms[1])),
            Arc::new(UInt64Array::from(vec![touched])),
            f(Some(seconds)),
        ],
    )?)
}
