//! The corrector's part of a step with a training subset: h's loss is over the touched
//! rows and the subset's, each once; the staleness columns stay the touched targets'.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Float32Array, Float32Builder, ListBuilder, RecordBatch, StringArray,
    StringBuilder, UInt64Array,
};
use arrow::datatypes::Float64Type;
use candle_core::{Device, Tensor};
use freshen_operators::loss::{relative_staleness, CorrectorLoss};

use super::{step, Loss, LossNodes, Objective};
use crate::dataflow::StepInputs;
use crate::store::batch::{self, embeddings_batch, Batch};
use crate::store::tables::{self, col};

const D: usize = 2;

fn vectors(ids: &[&str], f: impl Fn(usize) -> [f32; D]) -> Vec<f32> {
    (0..ids.len()).flat_map(f).collect()
}

fn embeddings(ids: &[&str], f: impl Fn(usize) -> [f32; D]) -> Batch {
    let values = vectors(ids, f);
    let ids = ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Batch(embeddings_batch(ids.clone(), vec![0; ids.len()], values, D).unwrap())
}

/// Two queries: q0's positive t0 and negative t2, q1's positive t1 and negative t2.
fn sample_rows() -> Batch {
    let mut negs = ListBuilder::new(StringBuilder::new());
    let mut scores = ListBuilder::new(Float32Builder::new());
    for _ in 0..2 {
        negs.values().append_value("t2");
        negs.append(true);
        scores.values().append_value(0.0);
        scores.append(true);
    }
    Batch(
        RecordBatch::try_new(
            tables::negatives_schema(),
            vec![
                Arc::new(UInt64Array::from(vec![0, 0])) as ArrayRef,
                Arc::new(StringArray::from(vec!["q0", "q1"])),
                Arc::new(StringArray::from(vec!["t0", "t1"])),
                Arc::new(Float32Array::from(vec![0.0, 0.0])),
                Arc::new(negs.finish()),
                Arc::new(scores.finish()),
            ],
        )
        .unwrap(),
    )
}

fn fresh_of(i: usize) -> [f32; D] {
    [1.0 + i as f32, 0.5 * i as f32]
}
fn corrected_of(i: usize) -> [f32; D] {
    [0.8 + i as f32, 0.5 * i as f32 + 0.3]
}
fn stale_of(i: usize) -> [f32; D] {
    [0.2 + i as f32, -0.4]
}

/// The drift rows h(B[y]) and B[y] of `ids`, the i-th with `corrected_of(i)`.
fn drift(ids: &[&str]) -> Batch {
    drift_with(ids, corrected_of)
}

/// [`drift`] with h(B[y]) of the i-th row `corrected(i)`.
fn drift_with(ids: &[&str], corrected: fn(usize) -> [f32; D]) -> Batch {
    let ids_owned: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    Batch(
        RecordBatch::try_new(
            tables::corrected_rows_schema(D),
            vec![
                Arc::new(StringArray::from(ids_owned)) as ArrayRef,
                batch::vector_column(vectors(ids, corrected), D).unwrap(),
                batch::vector_column(vectors(ids, stale_of), D).unwrap(),
            ],
        )
        .unwrap(),
    )
}

fn stat(out: &[(usize, Batch)], name: &str) -> f64 {
    let b = &out.iter().find(|(p, _)| *p == 1).unwrap().1 .0;
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Float64Type>()
        .value(0)
}

/// A loss whose corrector (node `drift`) trains.
fn corrector_nodes() -> LossNodes {
    LossNodes {
        queries: "queries".into(),
        targets: "targets".into(),
        corrected: Some("drift".into()),
        read: None,
        train_corrector: true,
    }
}

#[test]
fn the_corrector_learns_from_the_subset_rows_and_the_staleness_stays_the_touched() {
    let spec = Loss {
        beta: 20.0,
        corrector: CorrectorLoss::Mse,
        objective: Objective::Retriever,
    };
    let nodes = corrector_nodes();
    let dev = Device::Cpu;
    let touched = ["t0", "t1", "t2"];
    let all = ["t0", "t1", "t2", "s0", "s1"];
    let queries = vec![embeddings(&["q0", "q1"], |i| [1.0, i as f32])];
    let named = |drift_rows: Batch, subset: Option<Vec<Batch>>| {
        let mut named = vec![
            ("queries", queries.clone()),
            ("targets", vec![embeddings(&touched, fresh_of)]),
            ("sample", vec![sample_rows()]),
            ("drift", vec![drift_rows]),
        ];
        named.extend(subset.map(|s| ("subset", s)));
        StepInputs::from_named(named)
    };
    // The subset's fresh rows, numbered on from the touched ones.
    let subset = vec![embeddings(&["s0", "s1"], |i| fresh_of(i + 3))];
    let inputs = named(drift(&all), Some(subset));
    let with = step(0, &inputs, (&spec, &nodes, &dev)).unwrap();
    let mse = |n: usize| -> f64 {
        (0..n)
            .map(|i| {
                let (h, f) = (corrected_of(i), fresh_of(i));
                (0..D).map(|k| f64::from(h[k] - f[k]).powi(2)).sum::<f64>()
            })
            .sum::<f64>()
            / n as f64
    };
    let loss = stat(&with, "corrector_loss");
    assert!((loss - mse(5)).abs() < 1e-6, "{loss} against {}", mse(5));
    // h's gradient reaches every row, the subset's too.
    let grads: Vec<String> = with
        .iter()
        .filter(|(p, _)| *p == 0)
        .map(|(_, b)| &b.0)
        .filter(|b| batch::strings(b, col::NODE).unwrap().value(0) == "drift")
        .flat_map(|b| {
            let ids = batch::strings(b, col::ID).unwrap();
            (0..b.num_rows())
                .map(|r| ids.value(r).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(grads, all);
    // The targets' gradients are the touched rows' only: the subset is off the tape.
    let target_rows: usize = with
        .iter()
        .filter(|(p, b)| *p == 0 && batch::strings(&b.0, col::NODE).unwrap().value(0) == "targets")
        .map(|(_, b)| b.0.num_rows())
        .sum();
    assert_eq!(target_rows, 3);
    let t =
        |f: fn(usize) -> [f32; D]| Tensor::from_vec(vectors(&touched, f), (3, D), &dev).unwrap();
    let staleness = relative_staleness(&t(stale_of), &t(fresh_of)).unwrap();
    assert!((stat(&with, "staleness") - staleness).abs() < 1e-9);

    // Without the subset, h learns from the touched rows alone.
    let inputs = named(drift(&touched), None);
    let without = step(0, &inputs, (&spec, &nodes, &dev)).unwrap();
    assert!((stat(&without, "corrector_loss") - mse(3)).abs() < 1e-6);
    assert!((stat(&without, "staleness") - staleness).abs() < 1e-9);
}

#[test]
fn the_listwise_corrector_loss_is_over_every_query_and_row_of_the_step() {
    let (beta, weight) = (2.0, 0.5);
    let spec = Loss {
        beta,
        corrector: CorrectorLoss::Listwise { weight },
        objective: Objective::Retriever,
    };
    let nodes = corrector_nodes();
    let dev = Device::Cpu;
    let (touched, all) = (["t0", "t1", "t2"], ["t0", "t1", "t2", "s0", "s1"]);
    let query = |i: usize| [1.0, i as f32];
    // A drift that reorders the rows (a constant shift would leave every softmax as it is).
    let corrected = |i: usize| [1.0 + 0.3 * i as f32, 0.9 - 0.4 * i as f32];
    let inputs = StepInputs::from_named([
        ("queries", vec![embeddings(&["q0", "q1"], query)]),
        ("targets", vec![embeddings(&touched, fresh_of)]),
        ("sample", vec![sample_rows()]),
        ("drift", vec![drift_with(&all, corrected)]),
        (
            "subset",
            vec![embeddings(&["s0", "s1"], |i| fresh_of(i + 3))],
        ),
    ]);
    let out = step(0, &inputs, (&spec, &nodes, &dev)).unwrap();
    // By hand, in f64: the drift MSE over the five rows, and each query's KL of the
    // softmax over all five rows under h from the one under fresh g.
    let dot = |a: [f32; D], b: [f32; D]| (0..D).map(|k| f64::from(a[k] * b[k])).sum::<f64>();
    let log_softmax = |s: Vec<f64>| {
        let max = s.iter().cloned().fold(f64::MIN, f64::max);
        let lse = s.iter().map(|x| (x - max).exp()).sum::<f64>().ln() + max;
        s.into_iter().map(|x| x - lse).collect::<Vec<_>>()
    };
    let mut kl = 0.0;
    for q in 0..2 {
        let lp = log_softmax((0..5).map(|i| beta * dot(query(q), fresh_of(i))).collect());
        let lq = log_softmax((0..5).map(|i| beta * dot(query(q), corrected(i))).collect());
        kl += lp
            .iter()
            .zip(&lq)
            .map(|(p, q)| p.exp() * (p - q))
            .sum::<f64>()
            / 2.0;
    }
    let mse = (0..5)
        .map(|i| {
            let (h, f) = (corrected(i), fresh_of(i));
            (0..D).map(|k| f64::from(h[k] - f[k]).powi(2)).sum::<f64>()
        })
        .sum::<f64>()
        / 5.0;
    assert!(
        kl > 0.01,
        "the example must have a ranking to correct ({kl})"
    );
    let loss = stat(&out, "corrector_loss");
    assert!(
        (loss - (mse + weight * kl)).abs() < 1e-5,
        "{loss} against {}",
        mse + weight * kl
    );
}
