//! The gradients `update` moves between workers: each worker's weight gradients as one
//! Arrow batch (one row per parameter; row-sparse tables keep their row ids), and the
//! loss's row gradients summed per row.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, ListArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Float32Type, Schema, UInt32Type, UInt64Type};
use freshen_operators::train::HostGrad;

use crate::dataflow::rows_of;
use crate::error::{Error, Result};
use crate::store::batch::{self, Batch};
use crate::store::tables::col;

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

pub(super) fn partial_batch(worker: usize, grads: &[(String, HostGrad)]) -> Result<Batch> {
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
pub(super) fn read_partial(b: &RecordBatch) -> Result<Vec<(u64, String, HostGrad)>> {
    let bad = || Error::invariant("malformed gradient batch");
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
pub(super) fn row_grads(batches: &[Batch]) -> Result<HashMap<(String, String), Vec<f32>>> {
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
