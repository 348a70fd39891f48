//! Layer norm forward and the two-stage backward (kernels/layernorm.cu).

use super::runtime::{Args, LaunchConfig};
use super::{float_suffix, GpuStorage};
use crate::{DType, Error, Layout, Result};

const ROWS_PER_BLOCK: usize = 64;

fn rows_cols(layout: &Layout, gamma_len: usize, op: &'static str) -> Result<(usize, usize)> {
    match layout.shape().last() {
        Some(&c) if c > 0 && c == gamma_len => Ok((layout.elem_count() / c, c)),
        _ => Err(Error::shape(
            op,
            format!("input {:?} with gamma/beta of size {gamma_len}", layout.shape()),
        )),
    }
}

impl GpuStorage {
    pub(crate) fn layer_norm_gpu(
        &self,
        layout: &Layout,
        gamma: &GpuStorage,
        beta: &GpuStorage,
        eps: f64,
    ) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
        let (rows, c) = rows_cols(layout, gamma.len, "layer_norm")?;
        if beta.len != c || gamma.dtype != self.dtype || beta.dtype != self.dtype {
            return Err(Error::shape(
                "layer_norm",
                format!(
                    "gamma {} / beta {} elements ({} / {}) for last dim {c} of {}",
                    gamma.len, beta.len, gamma.dtype, beta.dtype, self.dtype
                ),
            ));
        }
        let (x, _keep) = self.contiguous_ptr(layout)?;
        let y = self.new_like(rows * c, self.dtype)?;
        let mean = self.new_like(rows, DType::F32)?;
        let rstd = self.new_like(rows, DType::F32)?;
        if rows > 0 {
            let mut args = Args::new();
            args.ptr(x)
                .ptr(gamma.ptr())
                .ptr(beta.ptr())
                .ptr(y.ptr())
                .ptr(mean.ptr())
                .ptr(rstd.ptr())
                .i64(rows as i64)
                .i32(c as i32)
                .f32(eps as f32);
            let cfg = LaunchConfig {
                grid: (rows.div_ceil(8).clamp(1, 1 << 20) as u32, 1, 1),
                block: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            self.launch(
                &format!("layernorm_fwd_{}", float_suffix(self.dtype, "layer_norm")?),
                cfg,
                &mut args,
            )?;
        }
        Ok((y, mean, rstd))
    }

    pub(crate) fn layer_norm_backward_gpu(
        &self,
        layout: &Layout,
        gamma: &GpuStorage,
        mean: &GpuStorage,
        rstd: &GpuStorage,
        grad: &GpuStorage,
        grad_layout: &Layout,
    ) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
        let op = "layer_norm_backward";
        let (rows, c) = rows_cols(layout, gamma.len, op)?;
        let sfx = float_suffix(self.dtype, op)?;
        let (x, _k1) = self.contiguous_ptr(layout)?;
        let (dy, _k2) = grad.contiguous_ptr(grad_layout)?;
        let dx = self.new_like(rows * c, self.dtype)?;
        let blocks = rows.div_ceil(ROWS_PER_BLOCK);
        let dg_partial = self.new_like((blocks * c).max(1), DType::F32)?;
        let db_partial = self.new_like((blocks * c).max(1), DType::F32)?;
        if rows > 0 {
            let mut args = Args::new();
            args.ptr(x)
                .ptr(gamma.ptr())
                .ptr(mean.ptr())
                .ptr(rstd.ptr())
                .ptr(dy)
                .ptr(dx.ptr())
                .ptr(dg_partial.ptr())
                .ptr(db_partial.ptr())
                .i64(rows as i64)
                .i32(c as i32)
                .i32(ROWS_PER_BLOCK as i32);
            let cfg = LaunchConfig {
                grid: (blocks as u32, 1, 1),
                block: (256, 1, 1),
                shared_mem_bytes: (16 * ROWS_PER_BLOCK) as u32,
            };
            self.launch(&format!("layernorm_bwd_{sfx}"), cfg, &mut args)?;
        }
        let dgamma = self.new_like(c, self.dtype)?;
        let dbeta = self.new_like(c, self.dtype)?;
        let mut args = Args::new();
        args.ptr(dg_partial.ptr())
            .ptr(db_partial.ptr())
            .ptr(dgamma.ptr())
            .ptr(dbeta.ptr())
            .i32(blocks as i32)
            .i32(c as i32);
        let cfg = LaunchConfig {
            grid: (c.div_ceil(32) as u32, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(&format!("layernorm_bwd_reduce_{sfx}"), cfg, &mut args)?;
        Ok((dx, dgamma, dbeta))
    }
}
