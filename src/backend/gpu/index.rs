//! Gather along a dim and its adjoint scatter-add (kernels/embedding.cu). Ids are checked on the
//! host first, so a bad id is an error naming the op rather than a device fault.

use super::runtime::{elementwise_config, Args};
use super::{float_suffix, suffix, GpuStorage};
use crate::{DType, Error, Layout, Result};

fn split(shape: &[usize], dim: usize, op: &'static str) -> Result<(usize, usize, usize)> {
    if dim >= shape.len() {
        return Err(Error::shape(op, format!("dim {dim} out of range for shape {shape:?}")));
    }
    Ok((shape[..dim].iter().product(), shape[dim], shape[dim + 1..].iter().product()))
}

impl GpuStorage {
    /// Ids of a view as a contiguous i64 device buffer, after checking them against `bound`.
    fn checked_ids(&self, layout: &Layout, bound: usize, op: &'static str) -> Result<GpuStorage> {
        let ids = self.ids_i64(layout, op)?;
        ids.to_host_whole()?.indices(&Layout::contiguous(&[ids.len]), bound, op)?;
        Ok(ids)
    }

    pub(crate) fn index_select_gpu(&self, layout: &Layout, ids: &GpuStorage, ids_layout: &Layout, dim: usize) -> Result<GpuStorage> {
        let (outer, n, inner) = split(layout.shape(), dim, "index_select")?;
        let ids = ids.checked_ids(ids_layout, n, "index_select")?;
        let (x, _keep) = self.contiguous_ptr(layout)?;
        let total = outer * ids.len * inner;
        let out = self.new_like(total, self.dtype)?;
        if total > 0 {
            let mut args = Args::new();
            args.ptr(x)
                .ptr(ids.ptr())
                .ptr(out.ptr())
                .i64(outer as i64)
                .i64(n as i64)
                .i64(inner as i64)
                .i64(ids.len as i64);
            self.launch(
                &format!("index_select_{}", suffix(self.dtype, "index_select")?),
                elementwise_config(total),
                &mut args,
            )?;
        }
        Ok(out)
    }

    pub(crate) fn index_add_gpu(
        &self,
        layout: &Layout,
        ids: &GpuStorage,
        ids_layout: &Layout,
        dim: usize,
        dim_size: usize,
    ) -> Result<GpuStorage> {
        let (outer, len, inner) = split(layout.shape(), dim, "index_add")?;
        let ids = ids.checked_ids(ids_layout, dim_size, "index_add")?;
        if ids.len != len {
            return Err(Error::shape("index_add", format!("{} ids for {len} source slices", ids.len)));
        }
        let (src, _keep) = self.contiguous_ptr(layout)?;
        let acc = self.new_like(outer * dim_size * inner, DType::F32)?;
        acc.fill(0.0)?;
        let total = outer * len * inner;
        if total > 0 {
            let mut args = Args::new();
            args.ptr(src)
                .ptr(ids.ptr())
                .ptr(acc.ptr())
                .i64(outer as i64)
                .i64(len as i64)
                .i64(inner as i64)
                .i64(dim_size as i64);
            self.launch(
                &format!("index_add_{}", float_suffix(self.dtype, "index_add")?),
                elementwise_config(total),
                &mut args,
            )?;
        }
        if self.dtype == DType::F32 {
            return Ok(acc);
        }
        acc.cast_gpu(&Layout::contiguous(&[acc.len]), self.dtype)
    }
}
