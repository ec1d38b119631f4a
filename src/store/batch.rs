//! Arrow record batches as they travel between operators.
//!
//! Inside one process timely hands batches from thread to thread as objects; between
//! processes it serialises them, and [`Batch`] then travels as Arrow IPC bytes, the
//! format every Arrow implementation reads.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float32Builder, ListArray,
    ListBuilder, RecordBatch, StringArray, StringBuilder, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::store::tables::{self, col};

/// A record batch on a dataflow edge.
#[derive(Debug, Clone)]
pub struct Batch(pub RecordBatch);

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut bytes, &self.0.schema())
                .map_err(serde::ser::Error::custom)?;
            w.write(&self.0).map_err(serde::ser::Error::custom)?;
            w.finish().map_err(serde::ser::Error::custom)?;
        }
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes: Vec<u8> = serde_bytes_vec(d)?;
        let mut r =
            StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(de::Error::custom)?;
        match r.next() {
            Some(Ok(b)) => Ok(Batch(b)),
            Some(Err(e)) => Err(de::Error::custom(e)),
            None => Err(de::Error::custom("empty Arrow IPC stream")),
        }
    }
}

fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("Arrow IPC bytes")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> std::result::Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> std::result::Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_byte_buf(V)
}

/// A string column by name, or an error naming the column.
pub fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| Error::Column {
            column: name.to_string(),
            expected: "a string",
        })
}

/// The `text_hash` column.
pub fn hashes(batch: &RecordBatch) -> Result<&UInt64Array> {
    batch
        .column_by_name(col::TEXT_HASH)
        .and_then(|c| c.as_primitive_opt())
        .ok_or_else(|| Error::Column {
            column: col::TEXT_HASH.to_string(),
            expected: "a uint64",
        })
}

/// The embedding column's values, row-major, and its width.
pub fn vectors(batch: &RecordBatch) -> Result<(&[f32], usize)> {
    vectors_of(batch, col::EMBEDDING)
}

/// A fixed-size-list column of float32 vectors from row-major values.
pub fn vector_column(values: Vec<f32>, dim: usize) -> Result<ArrayRef> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    Ok(Arc::new(FixedSizeListArray::try_new(
        item,
        dim as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )?))
}

/// The row-major values and width of the fixed-size-list column `name`.
pub fn vectors_of<'a>(batch: &'a RecordBatch, name: &str) -> Result<(&'a [f32], usize)> {
    let list = batch
        .column_by_name(name)
        .and_then(|c| c.as_fixed_size_list_opt())
        .ok_or_else(|| Error::Column {
            column: name.to_string(),
            expected: "a fixed-size-list",
        })?;
    let dim = list.value_length() as usize;
    let values = list.values().as_primitive::<Float32Type>().values();
    let start = list.offset() * dim;
    Ok((&values[start..start + list.len() * dim], dim))
}

/// A list-of-strings column from per-row lists.
pub fn string_list_column(rows: &[Vec<String>]) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for v in row {
            b.values().append_value(v);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// A list-of-float32 column from per-row lists.
pub fn float_list_column(rows: &[Vec<f32>]) -> ArrayRef {
    let mut b = ListBuilder::new(Float32Builder::new());
    for row in rows {
        b.values().append_slice(row);
        b.append(true);
    }
    Arc::new(b.finish())
}

/// The per-row float lists of the list-of-float32 column `name`.
pub fn float_lists(b: &RecordBatch, name: &str) -> Result<Vec<Vec<f32>>> {
    let list = b
        .column_by_name(name)
        .and_then(|c| c.as_list_opt::<i32>())
        .filter(|l| l.value_type() == DataType::Float32)
        .ok_or_else(|| Error::Column {
            column: name.to_string(),
            expected: "a list of float32",
        })?;
    Ok((0..list.len())
        .map(|r| {
            list.value(r)
                .as_primitive::<Float32Type>()
                .values()
                .to_vec()
        })
        .collect())
}

/// An embeddings batch (`id`, `text_hash`, `embedding`) from row-major vectors.
pub fn embeddings_batch(
    ids: Vec<String>,
    hashes: Vec<u64>,
    vectors: Vec<f32>,
    dim: usize,
) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        tables::embeddings_schema(dim),
        vec![
            Arc::new(StringArray::from(ids)) as ArrayRef,
            Arc::new(UInt64Array::from(hashes)),
            vector_column(vectors, dim)?,
        ],
    )?)
}

/// A batch of stored-embedding keys (`id`, `text_hash`).
pub fn keys_batch(keys: Vec<(String, u64)>) -> Result<RecordBatch> {
    let (ids, hashes): (Vec<String>, Vec<u64>) = keys.into_iter().unzip();
    Ok(RecordBatch::try_new(
        tables::keys_schema(),
        vec![
            Arc::new(StringArray::from(ids)) as ArrayRef,
            Arc::new(UInt64Array::from(hashes)),
        ],
    )?)
}

/// The schema a batch takes when its fixed-size vectors are stored as plain lists.
pub fn list_layout_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::FixedSizeList(item, _) => {
                Field::new(f.name(), DataType::List(item.clone()), f.is_nullable())
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Rewrites fixed-size-list columns as plain lists (for readers that need them).
pub fn to_list_layout(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = list_layout_schema(&batch.schema());
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.as_fixed_size_list_opt() {
            Some(fsl) => {
                let n = fsl.value_length() as usize;
                let item = match fsl.data_type() {
                    DataType::FixedSizeList(item, _) => item.clone(),
                    _ => unreachable!("checked to be a fixed-size list"),
                };
                let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(n, fsl.len()));
                let values = fsl.values().slice(fsl.offset() * n, fsl.len() * n);
                Arc::new(ListArray::new(item, offsets, values, fsl.nulls().cloned())) as ArrayRef
            }
            None => c.clone(),
        })
        .collect();
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slice of a batch (the evaluation sends its shard's rows as slices of one buffer)
    /// crosses processes as its own rows: Arrow IPC writes the slice, not the buffer.
    #[test]
    fn a_sliced_embeddings_batch_crosses_processes_as_its_rows() {
        let ids: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
        let values: Vec<f32> = (0..30).map(|v| v as f32).collect();
        let all = embeddings_batch(ids, (0..10).collect(), values, 3).unwrap();
        let part = all.slice(4, 3);
        let bytes = serde_json::to_vec(&Batch(part.clone())).unwrap();
        let back: Batch = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.0, part);
        let (v, d) = vectors(&back.0).unwrap();
        assert_eq!(
            (v, d),
            (
                &[12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0, 20.0][..],
                3
            )
        );
        assert_eq!(strings(&back.0, col::ID).unwrap().value(0), "t4");
    }
}
