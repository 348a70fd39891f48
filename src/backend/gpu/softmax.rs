//! Row softmax / log-softmax and the fused softmax cross-entropy (kernels/softmax.cu): one block
//! per row.

use super::runtime::{Args, LaunchConfig};
use super::{float_suffix, GpuStorage};
use crate::{DType, Error, Layout, Result};

/// kernels/softmax.cu's launch rule: about 8 elements a thread, one block a row.
fn row_config(rows: usize, c: usize) -> LaunchConfig {
    let warps = c.div_ceil(256).clamp(1, 32) as u32;
    LaunchConfig {
        grid: (rows.clamp(1, 1 << 20) as u32, 1, 1),
        block: (32 * warps, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn last_dim(layout: &Layout, op: &'static str) -> Result<(usize, usize)> {
    match layout.shape().last() {
        Some(&c) if c > 0 => Ok((layout.elem_count() / c, c)),
        _ => Err(Error::shape(op, format!("needs a non-empty last dim, got {:?}", layout.shape()))),
    }
}

impl GpuStorage {
    pub(crate) fn softmax_gpu(&self, layout: &Layout, log: bool) -> Result<GpuStorage> {
        let (rows, c) = last_dim(layout, "softmax")?;
        let (x, _keep) = self.contiguous_ptr(layout)?;
        let out = self.new_like(rows * c, self.dtype)?;
        if rows > 0 {
            let mut args = Args::new();
            args.ptr(x).ptr(out.ptr()).i64(rows as i64).i32(c as i32).i32(log as i32);
            self.launch(
                &format!("softmax_fwd_{}", float_suffix(self.dtype, "softmax")?),
                row_config(rows, c),
                &mut args,
            )?;
        }
        Ok(out)
    }

    pub(crate) fn softmax_backward_gpu(&self, layout: &Layout, grad: &GpuStorage, grad_layout: &Layout, log: bool) -> Result<GpuStorage> {
        let (rows, c) = last_dim(layout, "softmax_backward")?;
        let (y, _k1) = self.contiguous_ptr(layout)?;
        let (dy, _k2) = grad.contiguous_ptr(grad_layout)?;
        let out = self.new_like(rows * c, self.dtype)?;
        if rows > 0 {
            let mut args = Args::new();
            args.ptr(y).ptr(dy).ptr(out.ptr()).i64(rows as i64).i32(c as i32).i32(log as i32);
            self.launch(
                &format!("softmax_bwd_{}", float_suffix(self.dtype, "softmax_backward")?),
                row_config(rows, c),
                &mut args,
            )?;
        }
        Ok(out)
    }

    /// Targets as contiguous i64 on the device, validated on the host.
    fn checked_targets(targets: &GpuStorage, layout: &Layout, rows: usize, classes: usize, ignore: i64) -> Result<GpuStorage> {
        if layout.elem_count() != rows {
            return Err(Error::shape(
                "softmax_xent",
                format!("{} targets for {rows} rows", layout.elem_count()),
            ));
        }
        let t = targets.ids_i64(layout, "softmax_xent")?;
        let host: Vec<i64> = t.to_host_whole()?.into_vec()?;
        if let Some(bad) = host.iter().find(|&&v| v != ignore && (v < 0 || v as usize >= classes)) {
            return Err(Error::index(
                "softmax_xent",
                format!("target {bad} out of range for {classes} classes"),
            ));
        }
        Ok(t)
    }

    pub(crate) fn xent_gpu(
        &self,
        layout: &Layout,
        targets: &GpuStorage,
        targets_layout: &Layout,
        ignore: i64,
    ) -> Result<(GpuStorage, GpuStorage)> {
        let (rows, c) = last_dim(layout, "softmax_xent")?;
        let t = Self::checked_targets(targets, targets_layout, rows, c, ignore)?;
        let (x, _keep) = self.contiguous_ptr(layout)?;
        let loss = self.new_like(rows, self.dtype)?;
        let lse = self.new_like(rows, DType::F32)?;
        if rows > 0 {
            let mut args = Args::new();
            args.ptr(x)
                .ptr(t.ptr())
                .ptr(loss.ptr())
                .ptr(lse.ptr())
                .i64(rows as i64)
                .i32(c as i32)
                .i64(ignore);
            self.launch(
                &format!("xent_fwd_{}", float_suffix(self.dtype, "softmax_xent")?),
                row_config(rows, c),
                &mut args,
            )?;
        }
        Ok((loss, lse))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn xent_backward_gpu(
        &self,
        layout: &Layout,
        targets: &GpuStorage,
        targets_layout: &Layout,
        lse: &GpuStorage,
        grad: &GpuStorage,
        grad_layout: &Layout,
        ignore: i64,
    ) -> Result<GpuStorage> {
        let (rows, c) = last_dim(layout, "softmax_xent_backward")?;
        let t = Self::checked_targets(targets, targets_layout, rows, c, ignore)?;
        let (x, _k1) = self.contiguous_ptr(layout)?;
        let (g, _k2) = grad.contiguous_ptr(grad_layout)?;
        let out = self.new_like(rows * c, self.dtype)?;
        if rows > 0 {
            let mut args = Args::new();
            args.ptr(x)
                .ptr(t.ptr())
                .ptr(lse.ptr())
                .ptr(g)
                .ptr(out.ptr())
                .i64(rows as i64)
                .i32(c as i32)
                .i64(ignore);
            self.launch(
                &format!("xent_bwd_{}", float_suffix(self.dtype, "softmax_xent_backward")?),
                row_config(rows, c),
                &mut args,
            )?;
        }
        Ok(out)
    }
}
