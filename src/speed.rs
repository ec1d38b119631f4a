//! `freshen bench`: the measurements behind BENCHMARKS.md's speed table, on the same
//! inputs as the peer scripts of `benches/peers/`, each printing one JSON object.
//!
//! These time the compute crate directly (the code the operators run), without a
//! pipeline around it, so that the comparison with sentence-transformers, PyTorch, numpy
//! and FAISS measures the same work. `benches/speed.sh` runs both sides and prints ratios.

use freshen_operators::host::HostRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use clap::{Args, Subcommand};
use freshen_operators::device::{DeviceChoice, Precision};
use freshen_operators::train::{AdamW, AdamWConfig, Grad, Gradients, Trainable, TrainableEncoder};
use freshen_operators::{BertEncoder, BertOptions, Encoder};
use serde_json::json;

use crate::{Error, Result};

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Sentences per second of a BERT-family encoder (inference).
    Encode(EncodeArgs),
    /// One fine-tuning step: forward of both towers, loss, backward, AdamW.
    TrainStep(TrainStepArgs),
    /// Exact top-k of queries over cached vectors (the `sample` operator's kernel).
    Topk(TopkArgs),
    /// Cosines of a model's vectors with a fixture's (sentence-transformers' vectors, from
    /// `scripts/parity_fixture.py`), and with this build's own f32 CPU vectors.
    Parity(ParityArgs),
}

/// `freshen bench parity`.
#[derive(Debug, Args)]
pub struct ParityArgs {
    /// A sentence-transformers folder.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    pub model: PathBuf,
    /// The fixture: `sentences`, `tokens` and `embeddings`.
    #[arg(long, default_value = "tests/fixtures/minilm-parity.json")]
    pub fixture: PathBuf,
    /// Where the model runs, and in what precision.
    #[command(flatten)]
    pub on: On,
}

/// `freshen bench encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// A sentence-transformers folder.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    pub model: PathBuf,
    /// Texts, one per line.
    #[arg(long)]
    pub texts: PathBuf,
    /// Texts per batch (as sentence-transformers' batch_size).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Token budget per batch; default: batch × max_length (the batch size alone decides).
    #[arg(long)]
    pub batch_tokens: Option<usize>,
    /// Use only the first N texts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Timed repetitions; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Where the model runs, and in what precision.
    #[command(flatten)]
    pub on: On,
}

/// The device and precision of a measurement.
#[derive(Debug, Args)]
pub struct On {
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// `f32`, `bf16` or `f16` (mixed precision: f32 master weights).
    #[arg(long, default_value = "f32")]
    pub dtype: Precision,
}

impl On {
    fn open(&self) -> Result<Device> {
        Ok(self.device.open()?)
    }
}

/// Waits for the device's queued work, so that a timer read after it is honest.
fn sync(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}

/// `freshen bench train-step`.
#[derive(Debug, Args)]
pub struct TrainStepArgs {
    /// A sentence-transformers folder.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    pub model: PathBuf,
    /// Texts, one per line: queries are the first 3 words of the first Q, targets the first Q×T.
    #[arg(long)]
    pub texts: PathBuf,
    /// Queries per step (Q).
    #[arg(long, default_value_t = 32)]
    pub queries: usize,
    /// Targets per query (T): the positive and T-1 negatives.
    #[arg(long, default_value_t = 8)]
    pub targets_per_query: usize,
    /// Steps; the median of all but the first is reported.
    #[arg(long, default_value_t = 4)]
    pub steps: usize,
    /// Keep the lowest this many layers fixed (and the embeddings, when > 0).
    #[arg(long, default_value_t = 0)]
    pub freeze_layers: usize,
    /// Token budget of one batch of the forwards (the model's `batch_tokens`).
    #[arg(long, default_value_t = freshen_operators::encoder::bert::DEFAULT_BATCH_TOKENS)]
    pub batch_tokens: usize,
    /// Where the model runs, and in what precision.
    #[command(flatten)]
    pub on: On,
}

/// `freshen bench topk`.
#[derive(Debug, Args)]
pub struct TopkArgs {
    /// Cached vectors: raw little-endian f32, row-major (`make_vectors.py`).
    #[arg(long)]
    pub vectors: PathBuf,
    /// Queries, same format.
    #[arg(long)]
    pub queries: PathBuf,
    /// Width of a vector.
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Cache rows scored per matmul.
    #[arg(long, default_value_t = 16384)]
    pub chunk: usize,
    /// Timed repetitions; the best is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
}

/// Runs one measurement and returns its JSON.
pub fn run(cmd: &BenchCommand) -> Result<serde_json::Value> {
    match cmd {
        BenchCommand::Encode(a) => encode(a),
        BenchCommand::TrainStep(a) => train_step(a),
        BenchCommand::Topk(a) => topk(a),
        BenchCommand::Parity(a) => parity(a),
    }
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

fn threads() -> usize {
    rayon::current_num_threads()
}

/// Peak resident memory of this process so far, in MB (Linux `VmHWM`; 0 elsewhere).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn encode(a: &EncodeArgs) -> Result<serde_json::Value> {
    let mut texts = read_lines(&a.texts)?;
    if let Some(n) = a.limit {
        texts.truncate(n);
    }
    let probe = BertEncoder::load(&a.model, BertOptions::default())?;
    let options = BertOptions {
        max_batch: a.batch,
        batch_tokens: a.batch_tokens.unwrap_or(a.batch * probe.max_length()),
        dtype: a.on.dtype,
        ..BertOptions::default()
    };
    drop(probe);
    let device = a.on.open()?;
    let enc = BertEncoder::load_on(&a.model, options, &device)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    enc.encode(&refs[..refs.len().min(a.batch)])?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..a.repeats.max(1) {
        let t0 = Instant::now();
        let v = enc.encode(&refs)?;
        best = best.min(t0.elapsed().as_secs_f64());
        std::hint::black_box(v);
    }
    Ok(json!({
        "engine": "freshen", "device": a.on.device.to_string(), "dtype": a.on.dtype.to_string(),
        "batch": a.batch, "texts": texts.len(), "seconds": best,
        "sent_per_s": texts.len() as f64 / best, "threads": threads(),
        "peak_rss_mb": peak_rss_mb(),
    }))
}

/// Contrastive loss over `scale · q tᵀ` with query i's positive at target i·per, and the
/// gradients of the loss with respect to `q` and `t` (what the `loss` operator hands
/// back to the towers).
fn contrastive(q: &Tensor, t: &Tensor, per: usize) -> Result<(f32, Tensor, Tensor)> {
    let (qv, tv) = (Var::from_tensor(q)?, Var::from_tensor(t)?);
    let scores = (qv.matmul(&tv.t()?)? * 20.0)?;
    let nq = q.dim(0)?;
    let labels: Vec<u32> = (0..nq).map(|i| (i * per) as u32).collect();
    let labels = Tensor::from_vec(labels, nq, q.device())?;
    let loss = candle_nn::loss::cross_entropy(&scores, &labels)?;
    let g = loss.backward()?;
    let grad = |v: &Var| -> Result<Tensor> {
        g.get(v.as_tensor())
            .cloned()
            .ok_or_else(|| Error::invariant("loss has no gradient"))
    };
    Ok((loss.host_scalar()?, grad(&qv)?, grad(&tv)?))
}

fn train_step(a: &TrainStepArgs) -> Result<serde_json::Value> {
    let texts = read_lines(&a.texts)?;
    let (nq, per) = (a.queries, a.targets_per_query);
    if texts.len() < nq * per {
        return Err(Error::Usage(format!(
            "{}: need {} texts, found {}",
            a.texts.display(),
            nq * per,
            texts.len()
        )));
    }
    let queries: Vec<String> = texts[..nq]
        .iter()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect();
    let qrefs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let trefs: Vec<&str> = texts[..nq * per].iter().map(String::as_str).collect();
    let device = a.on.open()?;
    let enc = BertEncoder::load_on(
        &a.model,
        BertOptions {
            freeze_layers: a.freeze_layers,
            freeze_embeddings: a.freeze_layers > 0,
            dtype: a.on.dtype,
            batch_tokens: a.batch_tokens,
            ..BertOptions::default()
        },
        &device,
    )?;
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: 0.01,
        ..AdamWConfig::default()
    });
    let params = enc.params();
    let mut rows = Vec::new();
    let mut without_gradient: Vec<String> = Vec::new();
    for step in 0..a.steps.max(1) {
        let t0 = Instant::now();
        let rq = enc.forward_train(&qrefs)?;
        let rt = enc.forward_train(&trefs)?;
        let (loss, gq, gt) = contrastive(&rq.output.detach(), &rt.output.detach(), per)?;
        let t1 = Instant::now();
        let mut grads = enc.backward(&rq, &gq)?;
        grads.accumulate(enc.backward(&rt, &gt)?)?;
        drop((rq, rt));
        if step == 0 {
            without_gradient = params
                .iter()
                .filter(|(name, _)| !has_gradient(&grads, name))
                .map(|(name, _)| name.clone())
                .collect();
        }
        sync(&device)?;
        let t2 = Instant::now();
        opt.step(&params, &grads, &|_| 2e-5)?;
        sync(&device)?;
        let t3 = Instant::now();
        let r = [
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (t3 - t0).as_secs_f64(),
        ];
        eprintln!(
            "  step {step}: loss {loss:.6} forward {:.3}s backward {:.3}s adamw {:.3}s total {:.3}s",
            r[0], r[1], r[2], r[3]
        );
        rows.push((r, loss));
    }
    let timed: Vec<_> = if rows.len() > 1 {
        &rows[1..]
    } else {
        &rows[..]
    }
    .to_vec();
    let median = |i: usize| {
        let mut v: Vec<f64> = timed.iter().map(|(r, _)| r[i]).collect();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    };
    Ok(json!({
        "engine": "freshen", "device": a.on.device.to_string(), "dtype": a.on.dtype.to_string(),
        "queries": nq, "targets": nq * per, "threads": threads(),
        "steps": rows.len(), "freeze_layers": a.freeze_layers,
        "trainable_params": params.iter().map(|(_, v)| v.elem_count()).sum::<usize>(),
        "forward_s": median(0), "backward_s": median(1), "adamw_s": median(2), "step_s": median(3),
        "losses": rows.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
        "params_without_gradient": without_gradient,
        "peak_rss_mb": peak_rss_mb(),
    }))
}

/// Whether `name` got a finite gradient with a non-zero entry (the layer-norm trap leaves
/// weights with none).
fn has_gradient(grads: &Gradients, name: &str) -> bool {
    let size = match grads.get(name) {
        Some(Grad::Dense(g)) => (|| g.abs().ok()?.sum_all().ok()?.host_scalar::<f32>().ok())(),
        Some(Grad::Rows { values, .. }) => Some(values.iter().map(|v| v.abs()).sum()),
        None => None,
    };
    size.is_some_and(|s| s > 0.0 && s.is_finite())
}

fn read_f32(path: &Path, dim: usize) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() % (4 * dim) != 0 {
        return Err(Error::Usage(format!(
            "{}: {} bytes is not a whole number of {dim}-wide f32 rows",
            path.display(),
            bytes.len()
        )));
    }
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let rows = values.len() / dim;
    Ok(Tensor::from_vec(
        values,
        (rows, dim),
        &freshen_operators::device::cpu(),
    )?)
}

fn topk(a: &TopkArgs) -> Result<serde_json::Value> {
    let device = a.device.open()?;
    let cache = read_f32(&a.vectors, a.dim)?.to_device(&device)?;
    let queries = read_f32(&a.queries, a.dim)?.to_device(&device)?;
    let b = queries.dim(0)?;
    let mut best = f64::INFINITY;
    let mut result = Vec::new();
    for _ in 0..a.repeats.max(1) {
        let t0 = Instant::now();
        result = freshen_operators::search::top_k(&queries, &cache, a.k, &[], a.chunk)?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    let first: Vec<Vec<u32>> = result
        .iter()
        .take(2)
        .map(|r| r.iter().map(|(i, _)| *i).collect())
        .collect();
    Ok(json!({
        "engine": "freshen", "device": a.device.to_string(), "queries": b, "rows": cache.dim(0)?,
        "k": a.k, "chunk": a.chunk,
        "seconds": best, "queries_per_s": b as f64 / best, "ids_first": first,
        "threads": threads(),
    }))
}

/// Lowest and mean cosine of matching rows.
fn cosines(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f64, f64) {
    let cos: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .collect();
    let lowest = cos.iter().copied().fold(f64::INFINITY, f64::min);
    (lowest, cos.iter().sum::<f64>() / cos.len().max(1) as f64)
}

fn parity(a: &ParityArgs) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(&a.fixture).map_err(|e| Error::io(&a.fixture, e))?;
    let bad = |m: String| Error::Usage(format!("{}: {m}", a.fixture.display()));
    let fixture: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("bad JSON: {e}")))?;
    let field = |name: &str| {
        fixture
            .get(name)
            .cloned()
            .ok_or_else(|| bad(format!("no `{name}`")))
    };
    let sentences: Vec<String> =
        serde_json::from_value(field("sentences")?).map_err(|e| bad(e.to_string()))?;
    let reference: Vec<Vec<f32>> =
        serde_json::from_value(field("embeddings")?).map_err(|e| bad(e.to_string()))?;
    let tokens: Vec<usize> =
        serde_json::from_value(field("tokens")?).map_err(|e| bad(e.to_string()))?;
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let rows = |t: Tensor| -> Result<Vec<Vec<f32>>> { Ok(t.host_vec2::<f32>()?) };
    let options = BertOptions {
        dtype: a.on.dtype,
        ..BertOptions::default()
    };
    let enc = BertEncoder::load_on(&a.model, options, &a.on.open()?)?;
    let ids = enc.tokenize(&refs)?;
    let ours = rows(enc.encode(&refs)?)?;
    let cpu = rows(BertEncoder::load(&a.model, BertOptions::default())?.encode(&refs)?)?;
    let (st_lowest, st_mean) = cosines(&ours, &reference);
    let (cpu_lowest, cpu_mean) = cosines(&ours, &cpu);
    Ok(json!({
        "engine": "freshen", "device": a.on.device.to_string(), "dtype": a.on.dtype.to_string(),
        "sentences": sentences.len(),
        "tokens_match": ids.iter().map(Vec::len).collect::<Vec<_>>() == tokens,
        "lowest_cosine_vs_st": st_lowest, "mean_cosine_vs_st": st_mean,
        "lowest_cosine_vs_cpu_f32": cpu_lowest, "mean_cosine_vs_cpu_f32": cpu_mean,
    }))
}
