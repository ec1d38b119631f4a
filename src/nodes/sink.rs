//! `sink`: writes its input to a Parquet output of the pipeline, under a temporary name
//! that the run commits when every worker has succeeded.

use std::path::PathBuf;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Settings;
use crate::dataflow::{write_on_leader, BatchStream, BuildCx, Operator};
use crate::error::{Error, Result};
use crate::graph::needs::Need;
use crate::graph::{Access, CheckCx, FileUse, InputRole, NodeKind, PlanCx, Planned, References};
use crate::spec::VectorLayout;
use crate::store::batch;

/// Settings of `sink`: writes its input to one of the pipeline's `outputs`.
///
/// Writes a Parquet file, the `outputs` entry it names.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sink {
    /// Name of an entry of the pipeline's `outputs`.
    pub output: String,
}

impl Settings for Sink {
    const TYPE: &'static str = "sink";
    const ROLES: &'static [InputRole] = ROLES;
}

/// Its inputs, by role.
pub(crate) const ROLES: &[InputRole] =
    &[InputRole::required("rows", "the node whose rows it writes")];

impl NodeKind for Sink {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn roles(&self) -> &'static [InputRole] {
        ROLES
    }

    fn references(&self) -> References {
        References {
            output: Some(("output", self.output.clone())),
            ..References::default()
        }
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
        Vec::new()
    }

    fn outputs(&self, _cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        Ok(Vec::new())
    }

    /// The rows of its input's vectors that the Parquet writer buffers before a row
    /// group is written (other columns are small).
    fn memory(&self, cx: &CheckCx) -> Vec<crate::graph::Cost> {
        super::cache_copies(
            cx,
            "rows",
            1.0,
            "the rows its Parquet writer buffers",
            crate::graph::Per::Leader,
        )
    }

    fn files(&self, cx: &CheckCx) -> Vec<FileUse> {
        cx.spec()
            .pipeline
            .outputs
            .get(&self.output)
            .map(|o| FileUse {
                at: format!("outputs.{}.path", self.output),
                path: o.path.clone(),
                access: Access::Write,
            })
            .into_iter()
            .collect()
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let out = cx
            .graph
            .spec
            .pipeline
            .outputs
            .get(&self.output)
            .ok_or_else(|| Error::invariant(format!("output `{}` is not defined", self.output)))?;
        let schema = cx
            .check()
            .input_schema("rows")
            .ok_or_else(|| Error::invariant("a sink input without a schema"))?;
        Ok(Planned::operator(SinkOp {
            path: out.path.clone(),
            layout: out.vectors,
            schema,
        }))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::json(self)
    }
}

/// A sink at run time.
struct SinkOp {
    path: PathBuf,
    layout: VectorLayout,
    schema: SchemaRef,
}

impl Operator for SinkOp {
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        let layout = self.layout;
        let schema = match layout {
            VectorLayout::Fixed => self.schema.clone(),
            VectorLayout::List => batch::list_layout_schema(&self.schema),
        };
        let (node, shared) = (cx.node.clone(), cx.run.clone());
        let map = move |b: arrow::array::RecordBatch| {
            shared.count(&node, |s| s.rows_out += b.num_rows());
            match layout {
                VectorLayout::Fixed => Ok(b),
                VectorLayout::List => batch::to_list_layout(&b),
            }
        };
        write_on_leader(cx, cx.input("rows")?, self.path.clone(), schema, map);
        Ok(Vec::new())
    }
}
