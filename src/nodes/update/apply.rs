//! The two operators of `update`: from the loss's gradients of embedding rows to new
//! weights, the same on every worker.
//!
//! The first, on each worker, takes the step's forwards off the tape and turns the row
//! gradients into weight gradients ([`Trainable::backward`]). Their results are
//! broadcast, so the second, on every worker, sums all workers' gradients in worker order
//! (the same sum everywhere, bit for bit), averages them, clips them and steps AdamW. It
//! then emits the step's metrics row (worker 0) and the tick that the feedback edge
//! carries to the next step (every worker).
//!
//! Alone (one worker in all), the gradients skip the host: the first operator leaves them
//! where the models live, in a slot the second takes them from, and sends an empty batch
//! in their place. Copying every weight gradient to the host, into Arrow and back cost
//! 6-8 % of a MiniLM step on the CPU (BENCHMARKS.md, "GPU") and is the suspect for
//! most of a step's time on a GPU; the numbers are the same either way (the round trip is
//! exact and one worker's sum has one term).

use freshen_operators::host::HostRead;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, UInt64Type};
use candle_core::Tensor;
use freshen_operators::corrector::procrustes;
use freshen_operators::train::{
    AdamW, AdamWConfig, Grad, Gradients, HostGrad, Schedule, Trainable,
};
use timely::dataflow::operators::vec::Broadcast;

use super::grads::{partial_batch, read_partial, row_grads};
use super::{OnNonfinite, Update, UpdatePlan};
use crate::dataflow::checkpoint::{load_json, load_tensors, save_json, save_tensors};
use crate::dataflow::{
    rows_of, tick, BatchStream, BuildCx, Checkpointable, Emitted, StepInputs, Stepwise, Time,
    WorkerModels,
};
use crate::error::{Error, Result};
use crate::store::batch::Batch;
use crate::store::tables;

/// The numbers of a step that its metrics row records beside the loss's statistics.
#[derive(Clone, Copy)]
struct StepNumbers {
    /// The schedule's factor on the peak learning rates.
    factor: f64,
    /// The gradient norms of the encoders and of the corrector, before clipping.
    norms: [f64; 2],
    /// Whether a corrector trains.
    has_corrector: bool,
    /// Seconds since the previous step.
    seconds: f64,
    /// Tensor copies to the host since the previous step (every operator's).
    host_reads: u64,
}

/// A lone worker's weight gradients of each step, on their models' devices, from the
/// backward to the apply.
type Kept = Rc<RefCell<BTreeMap<Time, BTreeMap<String, Gradients>>>>;

/// The update. Inputs: the loss's gradients and its statistics. Returns the metrics rows
/// (one per step, worker 0) and the tick of each finished step (every worker).
pub(super) fn update<'s>(
    cx: &BuildCx<'_, 's>,
    spec: Update,
    plan: UpdatePlan,
) -> Result<(BatchStream<'s>, BatchStream<'s>)> {
    let state = cx.models()?;
    let worker = cx.scope.index();
    let local = state.clone();
    let taped = plan.taped.clone();
    let kept: Option<Kept> = (cx.scope.peers() == 1).then(Kept::default);
    let keep = kept.clone();
    let backward = move |t: Time, inputs: StepInputs| {
        backward_step(t, &inputs, &taped, &local, worker, keep.as_ref())
    };
    let mut parts = Stepwise::new("Backward")
        .input("grads", cx.input("grads")?)
        .input("stats", cx.input("stats")?)
        .outputs(2)
        .build(cx, backward)
        .into_iter();
    let missing = || Error::invariant("backward without outputs");
    let (partials, stats) = (
        parts.next().ok_or_else(missing)?,
        parts.next().ok_or_else(missing)?,
    );
    let mut apply = Apply::new(cx, spec, plan, state, kept)?;
    let mut out = Stepwise::new("Apply")
        .input("partials", partials.broadcast())
        .input("stats", stats.broadcast())
        .outputs(2)
        .build(cx, move |t, inputs| apply.step(t, &inputs))
        .into_iter();
    let missing = || Error::invariant("update without outputs");
    Ok((
        out.next().ok_or_else(missing)?,
        out.next().ok_or_else(missing)?,
    ))
}

/// One worker's backward of step `t`: row gradients → weight gradients, from its own
/// tape. Port 0: its weight gradients (an empty batch when `kept` takes them); port 1: the
/// loss's statistics with its count of touched forwards.
fn backward_step(
    t: Time,
    inputs: &StepInputs,
    taped: &[String],
    state: &WorkerModels,
    worker: usize,
    kept: Option<&Kept>,
) -> Result<Emitted> {
    let rows = row_grads(&inputs["grads"])?;
    let mut per_model: BTreeMap<String, Gradients> = BTreeMap::new();
    for n in taped {
        for entry in state.take_tape(n, t) {
            let (r, d) = entry.recorded.output.dims2()?;
            let mut used = HashSet::new();
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
            let grad_out = Tensor::from_vec(g, (r, d), entry.recorded.output.device())?;
            let grads = state
                .trainable(&entry.model)?
                .backward(&entry.recorded, &grad_out)?;
            per_model
                .entry(entry.model.clone())
                .or_default()
                .accumulate(grads)?;
        }
    }
    let mut host = Vec::new();
    match kept {
        Some(slot) => {
            slot.borrow_mut().insert(t, per_model);
        }
        None => {
            for (model, g) in &per_model {
                host.extend(g.to_host()?.into_iter().map(|h| (model.clone(), h)));
            }
        }
    }
    let mut out = vec![(0, partial_batch(worker, &host)?)];
    let touched = state.take_touched(t);
    for b in rows_of(&inputs["stats"]) {
        out.push((1, Batch(with_touched(b, touched)?)));
    }
    Ok(out)
}

/// Per corrector set in closed form (the Procrustes objective), its decayed
/// cross-covariance `M` (row-major `d × d`, f64).
type Fits = Rc<RefCell<BTreeMap<String, Vec<f64>>>>;

/// The optimisers' state, as a checkpoint keeps it: per model its step count and the
/// first and second moments of each parameter; and the Procrustes fits' `M`.
struct Optimisers(Rc<RefCell<BTreeMap<String, AdamW>>>, Fits);

impl Checkpointable for Optimisers {
    fn save(&self, dir: &Path) -> Result<()> {
        let fits: Vec<(String, Tensor)> = self
            .1
            .borrow()
            .iter()
            .map(|(model, m)| {
                let d = (m.len() as f64).sqrt() as usize;
                Ok((
                    model.clone(),
                    Tensor::from_vec(m.clone(), (d, d), &candle_core::Device::Cpu)?,
                ))
            })
            .collect::<Result<_>>()?;
        if !fits.is_empty() {
            save_tensors(&dir.join("procrustes.safetensors"), &fits)?;
        }
        let mut steps = serde_json::Map::new();
        for (model, opt) in self.0.borrow().iter() {
            let (n, moments) = opt.export()?;
            steps.insert(model.clone(), n.into());
            let mut tensors = Vec::with_capacity(3 * moments.len());
            for (param, m, v) in moments {
                // A row-sparse table's moments are zero but in the rows a step touched:
                // only those are kept (with their row ids and the table's height).
                match touched_rows(&m, &v)? {
                    Some((ids, height)) => {
                        let index = Tensor::from_vec(ids.clone(), ids.len(), m.device())?;
                        tensors.push((format!("m/{param}"), m.index_select(&index, 0)?));
                        tensors.push((format!("v/{param}"), v.index_select(&index, 0)?));
                        tensors.push((format!("rows/{param}"), index));
                        let h = Tensor::from_vec(vec![height as u32], 1, m.device())?;
                        tensors.push((format!("height/{param}"), h));
                    }
                    None => {
                        tensors.push((format!("m/{param}"), m));
                        tensors.push((format!("v/{param}"), v));
                    }
                }
            }
            save_tensors(&dir.join(format!("{model}.safetensors")), &tensors)?;
        }
        save_json(&dir.join("steps.json"), &serde_json::Value::Object(steps))
    }
}

/// For a table (2-D, many rows) whose moments are zero in most rows: the rows that are not
/// (in `m` or `v`), and the height. `None` when keeping it whole is as small.
fn touched_rows(m: &Tensor, v: &Tensor) -> Result<Option<(Vec<u32>, usize)>> {
    let Ok((height, _)) = m.dims2() else {
        return Ok(None);
    };
    if height < 1024 {
        return Ok(None);
    }
    let any = (m.abs()? + v.abs()?)?.sum(1)?.host_vec1::<f32>()?;
    let ids: Vec<u32> = (0..height as u32)
        .filter(|&r| any[r as usize] != 0.0)
        .collect();
    Ok((ids.len() * 2 < height).then_some((ids, height)))
}

/// The full-height moments from the kept rows `values` at row ids `rows` (zeros elsewhere).
fn scatter_rows(values: &Tensor, rows: &Tensor, height: usize) -> Result<Tensor> {
    let (n, w) = values.dims2()?;
    let full = Tensor::zeros((height, w), values.dtype(), values.device())?;
    let index = rows.unsqueeze(1)?.broadcast_as((n, w))?.contiguous()?;
    full.scatter_set(&index, values, 0)?;
    Ok(full)
}

/// Sets `optimisers` (and the Procrustes fits) to the state a checkpoint's `dir` holds.
fn restore(
    dir: &Path,
    optimisers: &mut BTreeMap<String, AdamW>,
    fits: &mut BTreeMap<String, Vec<f64>>,
    state: &WorkerModels,
) -> Result<()> {
    let saved = dir.join("procrustes.safetensors");
    if saved.exists() {
        for (model, m) in load_tensors(&saved, &candle_core::Device::Cpu)? {
            fits.insert(model, m.flatten_all()?.host_vec1::<f64>()?);
        }
    }
    let steps = load_json(&dir.join("steps.json"))?;
    for (model, opt) in optimisers.iter_mut() {
        let device = state.device_of(model)?;
        let path = dir.join(format!("{model}.safetensors"));
        let saved = load_tensors(&path, &device)?;
        let mut params: Vec<String> = saved
            .keys()
            .filter_map(|k| k.strip_prefix("m/").map(str::to_string))
            .collect();
        params.sort();
        let mut moments = Vec::with_capacity(params.len());
        for p in params {
            let (m, v) = (saved.get(&format!("m/{p}")), saved.get(&format!("v/{p}")));
            let (Some(m), Some(v)) = (m, v) else {
                return Err(Error::data(
                    &path,
                    None,
                    format!("moments of `{p}` are incomplete"),
                ));
            };
            let (m, v) = match (
                saved.get(&format!("rows/{p}")),
                saved.get(&format!("height/{p}")),
            ) {
                (Some(rows), Some(height)) => {
                    let height = height.host_vec1::<u32>()?[0] as usize;
                    (
                        scatter_rows(m, rows, height)?,
                        scatter_rows(v, rows, height)?,
                    )
                }
                _ => (m.clone(), v.clone()),
            };
            moments.push((p, m, v));
        }
        let n = steps.get(model).and_then(|v| v.as_u64()).unwrap_or(0);
        opt.import(n, moments);
    }
    Ok(())
}

/// The second operator's state: the optimisers, the schedule and the progress bar.
struct Apply {
    spec: Update,
    plan: UpdatePlan,
    state: std::rc::Rc<WorkerModels>,
    schedule: Schedule,
    optimisers: Rc<RefCell<BTreeMap<String, AdamW>>>,
    fits: Fits,
    bar: indicatif::ProgressBar,
    last: Instant,
    /// The process's host reads when the previous step ended.
    reads: u64,
    worker: usize,
    peers: usize,
    /// The lone worker's gradients, taken here instead of from the partial batches.
    kept: Option<Kept>,
    run: Arc<crate::dataflow::RunState>,
    start: usize,
    /// The node's id, for its counters and its messages.
    node: String,
}

/// The step's losses, for the progress line.
fn losses(stats: &[Batch]) -> String {
    let mut parts = Vec::new();
    for name in ["retriever_loss", "corrector_loss", "staleness"] {
        let v: Vec<f64> = rows_of(stats)
            .filter_map(|b| {
                let c = b.column_by_name(name)?.as_primitive_opt::<Float64Type>()?;
                (!c.is_null(0)).then(|| c.value(0))
            })
            .collect();
        if !v.is_empty() {
            parts.push(format!(
                "{name} {:.4}",
                v.iter().sum::<f64>() / v.len() as f64
            ));
        }
    }
    parts.join(", ")
}

impl Apply {
    fn new(
        cx: &BuildCx,
        spec: Update,
        plan: UpdatePlan,
        state: std::rc::Rc<WorkerModels>,
        kept: Option<Kept>,
    ) -> Result<Self> {
        let schedule = Schedule {
            warmup: spec.warmup,
            total: plan.steps,
            decay: spec.decay,
        };
        let optimisers = plan
            .models
            .iter()
            .map(|(name, &(_, corrector))| {
                let cfg = AdamWConfig {
                    weight_decay: match corrector {
                        true => spec.corrector_weight_decay,
                        false => spec.weight_decay,
                    },
                    ..AdamWConfig::default()
                };
                (name.clone(), AdamW::new(cfg))
            })
            .collect();
        let optimisers = Rc::new(RefCell::new(optimisers));
        let fits: Fits = Rc::default();
        if let Some(point) = &cx.resume {
            restore(
                &point.node_dir(&cx.node),
                &mut optimisers.borrow_mut(),
                &mut fits.borrow_mut(),
                &state,
            )?;
        }
        state.register_state(
            &cx.node,
            Rc::new(Optimisers(optimisers.clone(), fits.clone())),
        );
        let worker = cx.scope.index();
        let bar = match worker {
            0 => cx.run.progress().steps_bar(plan.steps as u64),
            _ => indicatif::ProgressBar::hidden(),
        };
        Ok(Self {
            spec,
            plan,
            state,
            schedule,
            optimisers,
            fits,
            bar,
            last: Instant::now(),
            reads: freshen_operators::host::reads(),
            worker,
            peers: cx.scope.peers(),
            kept,
            run: cx.run.clone(),
            start: cx.start() as usize,
            node: cx.node.to_string(),
        })
    }

    /// Every worker's gradients of step `t`, summed in worker order and averaged.
    fn gradients(&self, t: Time, partials: &[Batch]) -> Result<BTreeMap<String, Gradients>> {
        if let Some(slot) = &self.kept {
            return Ok(slot.borrow_mut().remove(&t).unwrap_or_default());
        }
        let mut parts: Vec<(u64, String, HostGrad)> = Vec::new();
        for b in rows_of(partials) {
            parts.extend(read_partial(b)?);
        }
        parts.sort_by_key(|p| p.0);
        let mut per_model: BTreeMap<String, Vec<HostGrad>> = BTreeMap::new();
        for (_, model, g) in parts {
            per_model.entry(model).or_default().push(g);
        }
        let mut grads = BTreeMap::new();
        for (model, parts) in per_model {
            let device = self.state.device_of(&model)?;
            let mut g = Gradients::from_host(parts, &device)?;
            g.scale(1.0 / self.peers as f64)?;
            grads.insert(model, g);
        }
        Ok(grads)
    }

    /// The global norms of the encoders' and the corrector's gradients, and what each
    /// group's gradients are multiplied by to clip them to `clip` (AdamW applies it inside
    /// its own pass).
    fn clip(&self, grads: &BTreeMap<String, Gradients>) -> Result<([f64; 2], [f64; 2])> {
        let mut norms = [0f64; 2];
        for (model, g) in grads {
            let corrector = self.plan.models.get(model).is_some_and(|m| m.1);
            // A Procrustes fit is not a gradient step: its cross-covariance stays whole.
            if corrector && self.plan.procrustes.is_some() {
                continue;
            }
            norms[corrector as usize] += g.norm()?.powi(2);
        }
        let norms = norms.map(f64::sqrt);
        Ok((
            norms,
            norms.map(|n| Gradients::clip_factor(n, self.spec.clip)),
        ))
    }

    /// AdamW on every trained model, at the schedule's `factor`.
    fn step_models(
        &mut self,
        grads: &BTreeMap<String, Gradients>,
        factor: f64,
        clip: [f64; 2],
    ) -> Result<()> {
        for (model, g) in grads {
            let Some(&(scale, corrector)) = self.plan.models.get(model) else {
                continue;
            };
            let mut optimisers = self.optimisers.borrow_mut();
            let Some(opt) = optimisers.get_mut(model) else {
                continue;
            };
            if let (true, Some(decay)) = (corrector, self.plan.procrustes) {
                self.fit_procrustes(model, g, decay)?;
                continue;
            }
            if corrector {
                let h = self.state.corrector(model)?;
                let lr = self.spec.corrector_lr * factor * scale;
                opt.step_scaled(&h.params(), g, &|_| lr, clip[1])?;
            } else {
                let m = self.state.trainable(model)?;
                let sparse = m.sparse_params();
                let (lr, table_lr) = (
                    self.spec.lr * factor * scale,
                    self.spec.embedding_lr * factor * scale,
                );
                let lr_of = |p: &str| match sparse.iter().any(|s| s == p) {
                    true => table_lr,
                    false => lr,
                };
                opt.step_scaled(&m.params(), g, &lr_of, clip[0])?;
            }
        }
        Ok(())
    }

    /// The Procrustes objective's step for corrector `model`: the loss sent −g(y) per row,
    /// so the summed weight "gradient" is `−Σ g(y)·B[y]ᵀ = −Mᵀ`; `M` joins the decayed
    /// sum, and h is set to its orthogonal polar factor (`set_linear`).
    fn fit_procrustes(&self, model: &str, g: &Gradients, decay: f64) -> Result<()> {
        let Some(Grad::Dense(dw)) = g.get("out.weight") else {
            return Ok(());
        };
        let (d, _) = dw.dims2()?;
        let dw: Vec<f64> = dw
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .host_vec1()?;
        let mut fits = self.fits.borrow_mut();
        let m = fits
            .entry(model.to_string())
            .or_insert_with(|| vec![0.0; d * d]);
        procrustes::add_cross_from_grad(m, &dw, d, decay)?;
        let r = procrustes::polar(m.clone(), d)?;
        self.state.corrector(model)?.set_linear(&r)?;
        Ok(())
    }

    /// What is not finite in a step, if anything: the gradient norms (the same on every
    /// worker, so every worker decides alike) or a loss in the statistics.
    fn nonfinite(&self, stats: &[Batch], norms: [f64; 2]) -> Option<String> {
        let losses = losses(stats);
        let bad_loss = rows_of(stats).any(|b| {
            ["retriever_loss", "corrector_loss"].iter().any(|name| {
                b.column_by_name(name)
                    .and_then(|c| c.as_primitive_opt::<Float64Type>())
                    .is_some_and(|c| !c.is_empty() && !c.is_null(0) && !c.value(0).is_finite())
            })
        });
        let bad_norm = norms.iter().any(|n| !n.is_finite());
        (bad_loss || bad_norm).then(|| {
            let mut what = format!("gradient norm {}", norms[0]);
            if self.plan.models.values().any(|m| m.1) {
                what.push_str(&format!(", corrector gradient norm {}", norms[1]));
            }
            match losses.is_empty() {
                true => what,
                false => format!("{losses}, {what}"),
            }
        })
    }

    /// The one line a diverged run stops with: the step, what is not finite, and the
    /// setting to lower (the corrector's rate when only its gradients are not finite).
    fn diverged(&self, t: Time, what: &str, norms: [f64; 2]) -> String {
        let (key, value) = match norms[0].is_finite() && !norms[1].is_finite() {
            true => ("corrector_lr", self.spec.corrector_lr),
            false => ("lr", self.spec.lr),
        };
        let id = &self.node;
        format!(
            "training diverged at step {} of {}: {what} (lower `nodes.{id}.{key}`, now {value:e}, \
             or set `nodes.{id}.on_nonfinite=skip`); nothing was committed",
            t + 1,
            self.plan.steps
        )
    }

    /// Step `t`: sum, clip, step; port 0: the metrics row (worker 0); port 1: the tick.
    fn step(&mut self, t: Time, inputs: &StepInputs) -> Result<Emitted> {
        let grads = self.gradients(t, &inputs["partials"])?;
        let factor = self.schedule.factor(t as usize);
        let (norms, clip) = self.clip(&grads)?;
        match self.nonfinite(&inputs["stats"], norms) {
            None => self.step_models(&grads, factor, clip)?,
            Some(what) if self.spec.on_nonfinite == OnNonfinite::Skip => {
                if self.worker == 0 {
                    tracing::warn!(step = t + 1, "{what}: step skipped (`on_nonfinite: skip`)");
                    self.run.count(&self.node, |s| s.skipped += 1);
                }
            }
            Some(what) => return Err(Error::Diverged(self.diverged(t, &what, norms))),
        }
        self.bar.inc(1);
        if self.worker == 0 {
            let p = self.run.progress();
            // The phase starts as its first step ends (that step waited for the starting
            // cache), so the rate and ETA measure the steps after it.
            if t as usize == self.start {
                p.phase_at("train", "steps", t + 1, self.plan.steps as u64);
            }
            p.set_done("train", t + 1, losses(&inputs["stats"]));
        }
        let seconds = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        let reads = freshen_operators::host::reads();
        let host_reads = reads - std::mem::replace(&mut self.reads, reads);
        let mut out = vec![(1, tick())];
        if self.worker == 0 {
            let numbers = StepNumbers {
                factor,
                norms,
                has_corrector: self.plan.models.values().any(|m| m.1),
                seconds,
                host_reads,
            };
            out.push((
                0,
                Batch(metrics_row(t, &inputs["stats"], &self.spec, &numbers)?),
            ));
        }
        if t as usize + 1 >= self.plan.steps {
            self.bar.finish_and_clear();
        }
        Ok(out)
    }
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
fn metrics_row(t: Time, stats: &[Batch], spec: &Update, n: &StepNumbers) -> Result<RecordBatch> {
    let StepNumbers {
        factor,
        norms,
        has_corrector,
        seconds,
        host_reads,
    } = *n;
    let (mut queries, mut candidates, mut touched) = (0u64, 0u64, 0u64);
    let mut sums: [(f64, f64); 4] = [(0.0, 0.0); 4];
    for b in rows_of(stats) {
        let u = |name: &str| -> Result<u64> {
            Ok(b.column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .ok_or_else(|| Error::invariant(format!("statistics lack `{name}`")))?
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
            // Steps are numbered by the updates done: step 0 is the starting model.
            Arc::new(UInt64Array::from(vec![t + 1])) as ArrayRef,
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
            Arc::new(UInt64Array::from(vec![host_reads])),
        ],
    )?)
}
