//! One fused AdamW step over a parameter, in place: m and v are updated and the parameter moves,
//! in a single pass (decoupled weight decay, bias correction), vectorised at the CPU's width.
//! Moments are kept in the parameter's dtype; F16/BF16 parameters are updated through f32.

use super::float::Float;
use super::vmath::vectorised;
use super::CpuStorage;
use crate::backend::AdamWStep;
use crate::{Error, Layout, Result};
use rayon::prelude::*;

fn step_impl<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], s: &AdamWStep) {
    let (b1, b2) = (T::from_f64(s.beta1), T::from_f64(s.beta2));
    let bc1 = T::from_f64(1.0 - s.beta1.powi(s.step as i32));
    let bc2 = T::from_f64(1.0 - s.beta2.powi(s.step as i32));
    let (lr, eps, decay, gs) = (
        T::from_f64(s.lr),
        T::from_f64(s.eps),
        T::from_f64(1.0 - s.lr * s.weight_decay),
        T::from_f64(s.grad_scale),
    );
    const CHUNK: usize = 1 << 14;
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            vectorised(
                #[inline(always)]
                || {
                    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                        let g = g * gs;
                        *m = b1 * *m + (T::ONE - b1) * g;
                        *v = b2 * *v + (T::ONE - b2) * g * g;
                        let update = (*m / bc1) / ((*v / bc2).sqrt() + eps);
                        *p = *p * decay - lr * update;
                    }
                },
            )
        });
}

pub fn step(p: &mut CpuStorage, g: &CpuStorage, lg: &Layout, m: &mut CpuStorage, v: &mut CpuStorage, s: &AdamWStep) -> Result<()> {
    if !p.dtype().is_float() {
        return Err(Error::dtype("adamw", format!("parameter dtype {} is not a float type", p.dtype())));
    }
    // A gradient that is exactly its whole buffer in order is read in place; any other view is
    // gathered first.
    let gathered;
    let g = match lg.contiguous_range() {
        Some((0, end)) if end == g.len() => g,
        _ => {
            gathered = g.gather(lg);
            &gathered
        }
    };
    if g.len() != p.len() || m.len() != p.len() || v.len() != p.len() {
        return Err(Error::shape(
            "adamw",
            format!("param {} / grad {} / m {} / v {} elements", p.len(), g.len(), m.len(), v.len()),
        ));
    }
    match (p, g, m, v) {
        (CpuStorage::F32(p), CpuStorage::F32(g), CpuStorage::F32(m), CpuStorage::F32(v)) => step_impl(p, g, m, v, s),
        (CpuStorage::F64(p), CpuStorage::F64(g), CpuStorage::F64(m), CpuStorage::F64(v)) => step_impl(p, g, m, v, s),
        (p, g, m, v) => {
            // Half-precision parameters: widen, update, narrow.
            let dtype = p.dtype();
            let widen = |s: &CpuStorage| super::copy::cast(s, crate::DType::F32);
            let (CpuStorage::F32(mut pw), CpuStorage::F32(gw), CpuStorage::F32(mut mw), CpuStorage::F32(mut vw)) =
                (widen(p), widen(g), widen(m), widen(v))
            else {
                return Err(Error::dtype("adamw", format!("unsupported parameter dtype {dtype}")));
            };
            step_impl(&mut pw, &gw, &mut mw, &mut vw, s);
            *p = super::copy::cast(&CpuStorage::F32(pw), dtype);
            *m = super::copy::cast(&CpuStorage::F32(mw), m.dtype());
            *v = super::copy::cast(&CpuStorage::F32(vw), v.dtype());
        }
    }
    Ok(())
}
