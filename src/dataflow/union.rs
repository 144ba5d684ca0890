//! [`UnionOperator`]: UNION ALL — every input's changes, unchanged, in one output.
//! (UNION without ALL is a UNION ALL under a distinct aggregate.)

use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;

use super::{ChangeBatch, Operator, Output};
use crate::error::Result;

pub struct UnionOperator {
    schema: SchemaRef,
    inputs: usize,
}

impl UnionOperator {
    pub fn new(schema: SchemaRef, inputs: usize) -> Self {
        Self { schema, inputs }
    }
}

impl Operator for UnionOperator {
    fn name(&self) -> &'static str {
        "UnionOperator"
    }

    fn preserves_append_only(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("{} inputs", self.inputs)
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let cols = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() != f.data_type() {
                    cast(c, f.data_type())
                } else {
                    Ok(c.clone())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let data = datafusion::arrow::array::RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )?;
        out.push(ChangeBatch::new(data, batch.diffs));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::testing::*;

    #[test]
    fn union_all_passes_both_inputs_through() {
        let s = schema(&[("k", I64)]);
        let mut op = UnionOperator::new(s.clone(), 2);
        let out = run_epoch(
            &mut op,
            vec![(0, changes(&s, "1 +1\n2 -1")), (1, changes(&s, "1 +1"))],
        );
        assert_eq!(out, vec!["1 +2", "2 -1"]);
    }
}
