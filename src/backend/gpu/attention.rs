//! Fused attention forward and backward through kernels/attention.cu (tensor cores for bf16/f16
//! at head dims 32/64/128, a SIMT path otherwise).

use super::runtime::{elementwise_config, Args, LaunchConfig};
use super::{float_suffix, GpuStorage};
use crate::backend::{attention_dims, AttentionDims as Dims, AttentionParams};
use crate::{DType, Error, Layout, Result};

fn check(q: &Layout, k: &Layout, v: &Layout, op: &'static str) -> Result<Dims> {
    let dims = attention_dims(q, k, v, op)?;
    if dims.d > 256 {
        return Err(Error::shape(op, format!("head dim {} above the kernels' 256", dims.d)));
    }
    Ok(dims)
}

fn tensor_cores(dtype: DType, d: usize) -> bool {
    dtype != DType::F32 && matches!(d, 32 | 64 | 128)
}

impl GpuStorage {
    /// The addresses of q, k and v at their views' offsets.
    fn push_qkv(args: &mut Args, parts: [(&GpuStorage, &Layout); 3]) {
        for (s, l) in parts {
            args.ptr(s.ptr_at(l.offset()));
        }
    }

    fn mask_u32(mask: Option<(&GpuStorage, &Layout)>, dims: Dims, op: &'static str) -> Result<Option<GpuStorage>> {
        let Some((m, l)) = mask else { return Ok(None) };
        if l.shape() != [dims.b, dims.sk] {
            return Err(Error::shape(
                op,
                format!("key mask {:?} does not match [B, Sk] = [{}, {}]", l.shape(), dims.b, dims.sk),
            ));
        }
        Ok(Some(if m.dtype == DType::U32 {
            m.copy_strided_gpu(l)?
        } else {
            m.cast_gpu(l, DType::U32)?
        }))
    }

    fn push_dims_and_strides(args: &mut Args, dims: Dims, layouts: [&Layout; 3]) {
        args.i32(dims.b as i32)
            .i32(dims.h as i32)
            .i32(dims.sq as i32)
            .i32(dims.sk as i32)
            .i32(dims.d as i32);
        for l in layouts {
            let s = l.strides();
            args.i64(s[0] as i64).i64(s[1] as i64).i64(s[2] as i64);
        }
    }

    pub(crate) fn attention_gpu(
        &self,
        ql: &Layout,
        k: (&GpuStorage, &Layout),
        v: (&GpuStorage, &Layout),
        mask: Option<(&GpuStorage, &Layout)>,
        p: AttentionParams,
    ) -> Result<(GpuStorage, GpuStorage)> {
        let op = "attention";
        let dims = check(ql, k.1, v.1, op)?;
        if k.0.dtype != self.dtype || v.0.dtype != self.dtype {
            return Err(Error::dtype(op, "q, k and v must share a dtype"));
        }
        let mask = Self::mask_u32(mask, dims, op)?;
        let rows = dims.b * dims.h * dims.sq;
        let out = self.new_like(rows * dims.d, self.dtype)?;
        let lse = self.new_like(rows, DType::F32)?;
        if rows == 0 {
            return Ok((out, lse));
        }
        let mut args = Args::new();
        Self::push_qkv(&mut args, [(self, ql), k, v]);
        args.ptr(out.ptr()).ptr(lse.ptr()).ptr(mask.as_ref().map_or(0, |m| m.ptr()));
        Self::push_dims_and_strides(&mut args, dims, [ql, k.1, v.1]);
        args.f32(p.scale as f32).i32(p.causal as i32);
        let shared = if tensor_cores(self.dtype, dims.d) {
            5 * 64 * (dims.d + 8) * 2
        } else {
            0
        };
        let cfg = LaunchConfig {
            grid: (dims.sq.div_ceil(64) as u32, (dims.b * dims.h) as u32, 1),
            block: (128, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        self.launch(&format!("attention_fwd_{}", float_suffix(self.dtype, op)?), cfg, &mut args)?;
        Ok((out, lse))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_backward_gpu(
        &self,
        ql: &Layout,
        k: (&GpuStorage, &Layout),
        v: (&GpuStorage, &Layout),
        mask: Option<(&GpuStorage, &Layout)>,
        out: (&GpuStorage, &Layout),
        lse: &GpuStorage,
        grad: (&GpuStorage, &Layout),
        p: AttentionParams,
    ) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
        let op = "attention_backward";
        let dims = check(ql, k.1, v.1, op)?;
        let sfx = float_suffix(self.dtype, op)?;
        let mask = Self::mask_u32(mask, dims, op)?;
        let rows = dims.b * dims.h * dims.sq;
        let (o, _k1) = out.0.contiguous_ptr(out.1)?;
        let (dout, _k2) = grad.0.contiguous_ptr(grad.1)?;
        let dq = self.new_like(rows * dims.d, self.dtype)?;
        let dk = self.new_like(dims.b * dims.h * dims.sk * dims.d, self.dtype)?;
        let dv = self.new_like(dims.b * dims.h * dims.sk * dims.d, self.dtype)?;
        if rows == 0 || dims.sk == 0 {
            for t in [&dq, &dk, &dv] {
                t.fill(0.0)?;
            }
            return Ok((dq, dk, dv));
        }
        let delta = self.new_like(rows, DType::F32)?;
        let mut args = Args::new();
        args.ptr(o).ptr(dout).ptr(delta.ptr()).i64(rows as i64).i32(dims.d as i32);
        let cfg = LaunchConfig {
            grid: (rows.div_ceil(8) as u32, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(&format!("attention_bwd_preprocess_{sfx}"), cfg, &mut args)?;

        let dq_accum = self.new_like(rows * dims.d, DType::F32)?;
        dq_accum.fill(0.0)?;
        let mut args = Args::new();
        Self::push_qkv(&mut args, [(self, ql), k, v]);
        args.ptr(dout)
            .ptr(lse.ptr())
            .ptr(delta.ptr())
            .ptr(dq_accum.ptr())
            .ptr(dk.ptr())
            .ptr(dv.ptr())
            .ptr(mask.as_ref().map_or(0, |m| m.ptr()));
        Self::push_dims_and_strides(&mut args, dims, [ql, k.1, v.1]);
        args.f32(p.scale as f32).i32(p.causal as i32);
        let d = dims.d;
        let shared = if tensor_cores(self.dtype, d) {
            let bq = if d == 128 { 32 } else { 64 };
            (128 * (d + 8) + 4 * bq * (d + 8) + 64 * (bq + 8)) * 2 + 16 * bq
        } else {
            0
        };
        let cfg = LaunchConfig {
            grid: (dims.sk.div_ceil(64) as u32, (dims.b * dims.h) as u32, 1),
            block: (128, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        self.launch(&format!("attention_bwd_{sfx}"), cfg, &mut args)?;

        let n = rows * d;
        let mut args = Args::new();
        args.ptr(dq_accum.ptr()).ptr(dq.ptr()).i64(n as i64);
        self.launch(&format!("attention_dq_convert_{sfx}"), elementwise_config(n), &mut args)?;
        Ok((dq, dk, dv))
    }
}
