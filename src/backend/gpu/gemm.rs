//! Batched matmul through kernels/gemm.cu: tensor cores for bf16/f16, SIMT for f32. Each operand
//! is passed as row- or column-major with one batch stride; any other view is copied first.

use super::runtime::{Args, LaunchConfig};
use super::{float_suffix, GpuStorage};
use crate::{DType, Error, Layout, Result};

/// How the kernel reads one [batch.., rows, cols] operand: (base offset, leading dim,
/// transposed, batch stride), or None when its strides do not fit that form.
fn operand_form(layout: &Layout) -> Option<(usize, usize, bool, usize)> {
    let rank = layout.rank();
    let (rows, cols) = (layout.shape()[rank - 2], layout.shape()[rank - 1]);
    let (rs, cs) = (layout.strides()[rank - 2], layout.strides()[rank - 1]);
    let (ld, trans) = if cs == 1 || cols == 1 {
        (rs.max(cols), false)
    } else if rs == 1 || rows == 1 {
        (cs.max(rows), true)
    } else {
        return None;
    };
    // The batch dims must step by one uniform stride (or all be broadcast).
    let batch_layout = Layout::new(layout.shape()[..rank - 2].to_vec(), layout.strides()[..rank - 2].to_vec(), 0);
    let offsets: Vec<usize> = batch_layout.offsets().collect();
    let stride = if offsets.len() > 1 { offsets[1] } else { 0 };
    if offsets.iter().enumerate().any(|(i, &o)| o != i * stride) {
        return None;
    }
    Some((layout.offset(), ld, trans, stride))
}

impl GpuStorage {
    pub(crate) fn matmul_gpu(&self, layout: &Layout, rhs: &GpuStorage, rhs_layout: &Layout) -> Result<GpuStorage> {
        let rank = layout.rank();
        if rank < 2
            || rhs_layout.rank() != rank
            || layout.shape()[..rank - 2] != rhs_layout.shape()[..rank - 2]
            || layout.shape()[rank - 1] != rhs_layout.shape()[rank - 2]
        {
            return Err(Error::shape("matmul", format!("{:?} x {:?}", layout.shape(), rhs_layout.shape())));
        }
        if self.dtype != rhs.dtype {
            return Err(Error::dtype("matmul", format!("{} x {}", self.dtype, rhs.dtype)));
        }
        let (m, k, n) = (layout.shape()[rank - 2], layout.shape()[rank - 1], rhs_layout.shape()[rank - 1]);
        let batch: usize = layout.shape()[..rank - 2].iter().product();
        if batch > 65535 {
            return Err(Error::shape(
                "matmul",
                format!("{batch} batched products exceed the 65535 the kernel's grid allows"),
            ));
        }
        // Operands that do not fit the kernel's form are copied to contiguous first.
        let fit = |s: &GpuStorage, l: &Layout| -> Result<(GpuStorage, (usize, usize, bool, usize))> {
            match operand_form(l) {
                Some(form) => Ok((s.clone(), form)),
                None => {
                    let c = s.copy_strided_gpu(l)?;
                    let form = operand_form(&Layout::contiguous(l.shape())).expect("contiguous fits");
                    Ok((c, form))
                }
            }
        };
        let (a, (a_off, lda, ta, sa)) = fit(self, layout)?;
        let (b, (b_off, ldb, tb, sb)) = fit(rhs, rhs_layout)?;
        let out = self.new_like(batch * m * n, self.dtype)?;
        if batch * m * n == 0 {
            return Ok(out);
        }
        let mut args = Args::new();
        args.ptr(a.ptr_at(a_off))
            .ptr(b.ptr_at(b_off))
            .ptr(out.ptr())
            .ptr(0)
            .ptr(0)
            .i32(m as i32)
            .i32(n as i32)
            .i32(k as i32)
            .i64(lda as i64)
            .i64(ldb as i64)
            .i64(n as i64)
            .i64(sa as i64)
            .i64(sb as i64)
            .i64((m * n) as i64)
            .i32(ta as i32)
            .i32(tb as i32)
            .f32(1.0)
            .i32(0);
        let shared = if self.dtype == DType::F32 { 33792 } else { 81920 };
        let cfg = LaunchConfig {
            grid: (n.div_ceil(128) as u32, m.div_ceil(128) as u32, batch as u32),
            block: (256, 1, 1),
            shared_mem_bytes: shared,
        };
        self.launch(&format!("gemm_{}", float_suffix(self.dtype, "matmul")?), cfg, &mut args)?;
        Ok(out)
    }
}
