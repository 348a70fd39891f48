//! The fused diffusion update on the CPU, the twin of kernels/denoise.cu: one pass over the
//! elements, guidance folded in.

use super::elementwise::par_fill;
use super::float::{float_data, Float, FloatData, FloatOut};
use super::CpuStorage;
use crate::backend::{DenoiseParams, Prediction};
use crate::{Error, Layout, Result};

type Operand<'a> = (&'a CpuStorage, &'a Layout);

fn run<T: Float>(x: &[T], cond: &[T], uncond: Option<&[T]>, noise: Option<&[T]>, p: &DenoiseParams) -> Vec<T> {
    let f = |v: f64| T::from_f64(v);
    let (s0, s1) = (f(p.sqrt_alpha_bar), f(p.sqrt_one_minus_alpha_bar));
    par_fill(x.len(), |i| {
        let m = match uncond {
            Some(u) => u[i] + f(p.guidance) * (cond[i] - u[i]),
            None => cond[i],
        };
        let (mut x0, eps) = match p.prediction {
            Prediction::Epsilon => ((x[i] - s1 * m) / s0, m),
            Prediction::V => (s0 * x[i] - s1 * m, s0 * m + s1 * x[i]),
        };
        if p.clip_sample > 0.0 {
            x0 = x0.max(f(-p.clip_sample)).min(f(p.clip_sample));
        }
        let z = noise.map_or(T::ZERO, |n| n[i]);
        f(p.c_x0) * x0 + f(p.c_xt) * x[i] + f(p.c_eps) * eps + f(p.c_noise) * z
    })
}

pub fn step(
    x: &CpuStorage,
    lx: &Layout,
    cond: Operand,
    uncond: Option<Operand>,
    noise: Option<Operand>,
    p: &DenoiseParams,
) -> Result<CpuStorage> {
    let op = "denoise_step";
    let xd = float_data(x, lx, op)?;
    let cd = float_data(cond.0, cond.1, op)?;
    let ud = uncond.map(|(s, l)| float_data(s, l, op)).transpose()?;
    let nd = noise.map(|(s, l)| float_data(s, l, op)).transpose()?;
    let mismatch = || Error::dtype(op, "x_t, model outputs and noise must share a dtype");
    let out = match (xd, cd) {
        (FloatData::F32(x), FloatData::F32(c)) => {
            let pick = |d: &Option<FloatData>| -> Result<Option<Vec<f32>>> {
                match d {
                    None => Ok(None),
                    Some(FloatData::F32(v)) => Ok(Some(v.to_vec())),
                    Some(_) => Err(mismatch()),
                }
            };
            let (u, n) = (pick(&ud)?, pick(&nd)?);
            FloatOut::F32(run(&x, &c, u.as_deref(), n.as_deref(), p))
        }
        (FloatData::F64(x), FloatData::F64(c)) => {
            let pick = |d: &Option<FloatData>| -> Result<Option<Vec<f64>>> {
                match d {
                    None => Ok(None),
                    Some(FloatData::F64(v)) => Ok(Some(v.to_vec())),
                    Some(_) => Err(mismatch()),
                }
            };
            let (u, n) = (pick(&ud)?, pick(&nd)?);
            FloatOut::F64(run(&x, &c, u.as_deref(), n.as_deref(), p))
        }
        _ => return Err(mismatch()),
    };
    Ok(out.into_storage(x.dtype()))
}
