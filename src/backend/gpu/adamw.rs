//! The fused AdamW step (kernels/adamw.cu).

use super::runtime::{elementwise_config, Args};
use super::{float_suffix, GpuStorage};
use crate::backend::AdamWStep;
use crate::{Error, Layout, Result};

impl GpuStorage {
    pub(crate) fn adamw_gpu(
        &mut self,
        grad: &GpuStorage,
        grad_layout: &Layout,
        m: &GpuStorage,
        v: &GpuStorage,
        s: &AdamWStep,
    ) -> Result<()> {
        let n = self.len;
        if grad_layout.elem_count() != n || m.len != n || v.len != n {
            return Err(Error::shape(
                "adamw",
                format!("param {n} / grad {} / m {} / v {} elements", grad_layout.elem_count(), m.len, v.len),
            ));
        }
        if grad.dtype != self.dtype || m.dtype != self.dtype || v.dtype != self.dtype {
            return Err(Error::dtype("adamw", "parameter, gradient and moments must share a dtype"));
        }
        let (g, _keep) = grad.contiguous_ptr(grad_layout)?;
        let bc1 = 1.0 - s.beta1.powi(s.step as i32);
        let bc2 = 1.0 - s.beta2.powi(s.step as i32);
        let mut args = Args::new();
        args.ptr(self.ptr())
            .ptr(g)
            .ptr(m.ptr())
            .ptr(v.ptr())
            .i64(n as i64)
            .f32(s.lr as f32)
            .f32(s.beta1 as f32)
            .f32(s.beta2 as f32)
            .f32(s.eps as f32)
            .f32(s.weight_decay as f32)
            .f32(bc1 as f32)
            .f32(bc2 as f32)
            .f32(s.grad_scale as f32);
        self.launch(
            &format!("adamw_{}", float_suffix(self.dtype, "adamw")?),
            elementwise_config(n),
            &mut args,
        )
    }
}
