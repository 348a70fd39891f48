//! Sum / max / min over one axis (kernels/reduce.cu): `reduce_rows` when the reduced axis is the
//! innermost, `reduce_cols` otherwise.

use super::runtime::{Args, LaunchConfig};
use super::{float_suffix, GpuStorage};
use crate::backend::ReduceOp;
use crate::{Error, Layout, Result};

impl GpuStorage {
    pub(crate) fn reduce_gpu(&self, layout: &Layout, op: ReduceOp, axis: usize) -> Result<GpuStorage> {
        let dims = layout.shape();
        if axis >= dims.len() {
            return Err(Error::shape("reduce", format!("axis {axis} out of range for shape {dims:?}")));
        }
        let (outer, n, inner) = (
            dims[..axis].iter().product::<usize>(),
            dims[axis],
            dims[axis + 1..].iter().product::<usize>(),
        );
        if n == 0 && op != ReduceOp::Sum {
            return Err(Error::shape("reduce", format!("{op:?} over an empty axis {axis} of {dims:?}")));
        }
        let (x, _keep) = self.contiguous_ptr(layout)?;
        let out = self.new_like(outer * inner, self.dtype)?;
        if outer * inner == 0 {
            return Ok(out);
        }
        let code = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        };
        let sfx = float_suffix(self.dtype, "reduce")?;
        let mut args = Args::new();
        if inner == 1 {
            args.ptr(x).ptr(out.ptr()).i64(outer as i64).i64(n as i64).i32(code);
            let cfg = LaunchConfig {
                grid: (outer.clamp(1, 65535) as u32, 1, 1),
                block: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            self.launch(&format!("reduce_rows_{sfx}"), cfg, &mut args)?;
        } else {
            args.ptr(x)
                .ptr(out.ptr())
                .i64(outer as i64)
                .i64(n as i64)
                .i64(inner as i64)
                .i32(code);
            let cfg = LaunchConfig {
                grid: (inner.div_ceil(32) as u32, outer.clamp(1, 65535) as u32, 1),
                block: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            self.launch(&format!("reduce_cols_{sfx}"), cfg, &mut args)?;
        }
        Ok(out)
    }
}
