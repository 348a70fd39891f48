//! The fused diffusion update through kernels/denoise.cu.

use super::runtime::{Args, LaunchConfig};
use super::{float_suffix, GpuStorage};
use crate::backend::{DenoiseParams, Prediction};
use crate::{Error, Layout, Result};

impl GpuStorage {
    pub(crate) fn denoise_gpu(
        &self,
        layout: &Layout,
        cond: (&GpuStorage, &Layout),
        uncond: Option<(&GpuStorage, &Layout)>,
        noise: Option<(&GpuStorage, &Layout)>,
        p: &DenoiseParams,
    ) -> Result<GpuStorage> {
        let op = "denoise_step";
        let n = layout.elem_count();
        for (s, l) in std::iter::once(cond).chain(uncond).chain(noise) {
            if s.dtype != self.dtype || l.elem_count() != n {
                return Err(Error::shape(
                    op,
                    format!(
                        "operand of {} elements ({}) for x_t of {n} ({})",
                        l.elem_count(),
                        s.dtype,
                        self.dtype
                    ),
                ));
            }
        }
        let (x, _k1) = self.contiguous_ptr(layout)?;
        let (c, _k2) = cond.0.contiguous_ptr(cond.1)?;
        let u = uncond.map(|(s, l)| s.contiguous_ptr(l)).transpose()?;
        let z = noise.map(|(s, l)| s.contiguous_ptr(l)).transpose()?;
        let out = self.new_like(n, self.dtype)?;
        if n == 0 {
            return Ok(out);
        }
        let mut args = Args::new();
        args.ptr(x)
            .ptr(c)
            .ptr(u.as_ref().map_or(0, |(p, _)| *p))
            .ptr(z.as_ref().map_or(0, |(p, _)| *p))
            .ptr(out.ptr())
            .i64(n as i64)
            .f32(p.guidance as f32)
            .i32(matches!(p.prediction, Prediction::V) as i32)
            .f32(p.sqrt_alpha_bar as f32)
            .f32(p.sqrt_one_minus_alpha_bar as f32)
            .f32(p.clip_sample as f32)
            .f32(p.c_x0 as f32)
            .f32(p.c_xt as f32)
            .f32(p.c_eps as f32)
            .f32(p.c_noise as f32);
        let cfg = LaunchConfig {
            grid: (n.div_ceil(2048).clamp(1, 4096) as u32, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(&format!("denoise_step_{}", float_suffix(self.dtype, op)?), cfg, &mut args)?;
        Ok(out)
    }
}
