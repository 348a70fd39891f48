//! Gathering by integer ids (index_select, embedding lookup); the backward scatter-adds.

use super::same_device;
use crate::{profile, Error, Result, Tensor};

impl Tensor {
    /// Slices of self along `dim` at `ids` (any shape of i64/u32 ids); `dim` is replaced by the
    /// ids' shape.
    pub fn index_select(&self, ids: &Tensor, dim: usize) -> Result<Tensor> {
        let _profile = profile::op("index_select", [self, ids]);
        same_device("index_select", &[self, ids])?;
        if dim >= self.rank() {
            return Err(Error::shape(
                "index_select",
                format!("dim {dim} out of range for shape {:?}", self.dims()),
            ));
        }
        let storage = self.storage().index_select(self.layout(), &**ids.storage(), ids.layout(), dim)?;
        let mut shape = self.dims()[..dim].to_vec();
        shape.extend_from_slice(ids.dims());
        shape.extend_from_slice(&self.dims()[dim + 1..]);
        let out = Tensor::from_storage(storage, &shape);
        let (ids, dim_size, src_dims) = (ids.detach(), self.dims()[dim], self.dims().to_vec());
        Ok(out.record("index_select", &[self], move |g| {
            // Flatten the ids' dims of the gradient into one, then scatter-add.
            let mut flat = src_dims[..dim].to_vec();
            flat.push(ids.elem_count());
            flat.extend_from_slice(&src_dims[dim + 1..]);
            let g = g.reshape(&flat)?;
            let ids_flat = ids.flatten_all()?;
            let dx = g
                .storage()
                .index_add(g.layout(), &**ids_flat.storage(), ids_flat.layout(), dim, dim_size)?;
            Ok(vec![Some(Tensor::from_storage(dx, &src_dims))])
        }))
    }

    /// Rows of an embedding table [V, D] for ids of any shape -> [.., D].
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::shape(
                "embedding",
                format!("table must be [vocab, dim], got {:?}", self.dims()),
            ));
        }
        self.index_select(ids, 0)
    }
}
