//! Strided copies, casts, fills and transfers to the host (kernels/copy.cu).

use super::runtime::{elementwise_config, Args, StridedLayout};
use super::{suffix, GpuStorage};
use crate::backend::CpuStorage;
use crate::{DType, Error, Layout, Result};
use half::{bf16, f16};

impl GpuStorage {
    pub(crate) fn copy_strided_gpu(&self, layout: &Layout) -> Result<GpuStorage> {
        let n = layout.elem_count();
        let out = self.new_like(n, self.dtype)?;
        self.copy_into_gpu(layout, &out, &Layout::contiguous(layout.shape()))?;
        Ok(out)
    }

    /// Writes the view `src` of self into the view `dst` of `out` (which may be self's buffer).
    pub(crate) fn copy_into_gpu(&self, src: &Layout, out: &GpuStorage, dst: &Layout) -> Result<()> {
        if src.shape() != dst.shape() {
            return Err(Error::shape(
                "copy_into",
                format!("source {:?} vs destination {:?}", src.shape(), dst.shape()),
            ));
        }
        if self.dtype != out.dtype {
            return Err(Error::dtype(
                "copy_into",
                format!("source is {}, destination {}", self.dtype, out.dtype),
            ));
        }
        let n = src.elem_count();
        if n == 0 {
            return Ok(());
        }
        let mut args = Args::new();
        args.ptr(self.ptr())
            .push(StridedLayout::from_layout(src, "copy")?)
            .ptr(out.ptr())
            .push(StridedLayout::from_layout(dst, "copy")?)
            .i64(n as i64);
        self.launch(
            &format!("copy_strided_{}", suffix(self.dtype, "copy")?),
            elementwise_config(n),
            &mut args,
        )
    }

    pub(crate) fn fill(&self, value: f64) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let mut args = Args::new();
        args.ptr(self.ptr()).i64(self.len as i64).push(value);
        self.launch(
            &format!("fill_{}", suffix(self.dtype, "fill")?),
            elementwise_config(self.len),
            &mut args,
        )
    }

    pub(crate) fn cast_gpu(&self, layout: &Layout, dtype: DType) -> Result<GpuStorage> {
        let n = layout.elem_count();
        if dtype == self.dtype {
            return self.copy_strided_gpu(layout);
        }
        let floats = [DType::F32, DType::F16, DType::BF16];
        let ints = [DType::I64, DType::U32];
        let on_device = (floats.contains(&self.dtype) && floats.contains(&dtype)) || (ints.contains(&self.dtype) && ints.contains(&dtype));
        if !on_device {
            // Between ids and floats (rare, small): through the host.
            let host = self.download(layout)?.to_dtype(dtype);
            let out = self.new_like(n, dtype)?;
            self.runtime().upload(out.ptr(), host.as_bytes())?;
            return Ok(out);
        }
        let (src, _keep) = self.contiguous_ptr(layout)?;
        let out = self.new_like(n, dtype)?;
        if n > 0 {
            let mut args = Args::new();
            args.ptr(src).ptr(out.ptr()).i64(n as i64);
            self.launch(
                &format!("cast_{}_{}", suffix(self.dtype, "cast")?, suffix(dtype, "cast")?),
                elementwise_config(n),
                &mut args,
            )?;
        }
        Ok(out)
    }

    /// The view's elements on the host, row-major.
    pub(crate) fn download(&self, layout: &Layout) -> Result<CpuStorage> {
        let n = layout.elem_count();
        let (ptr, _keep) = self.contiguous_ptr(layout)?;
        let mut bytes = vec![0u8; n * self.dtype.size_in_bytes()];
        self.runtime().download(ptr, &mut bytes)?;
        let words = |b: &[u8]| -> Vec<u16> { bytemuck::pod_collect_to_vec(b) };
        Ok(match self.dtype {
            DType::F32 => CpuStorage::F32(bytemuck::pod_collect_to_vec(&bytes)),
            DType::F64 => CpuStorage::F64(bytemuck::pod_collect_to_vec(&bytes)),
            DType::F16 => CpuStorage::F16(words(&bytes).into_iter().map(f16::from_bits).collect()),
            DType::BF16 => CpuStorage::BF16(words(&bytes).into_iter().map(bf16::from_bits).collect()),
            DType::I64 => CpuStorage::I64(bytemuck::pod_collect_to_vec(&bytes)),
            DType::U32 => CpuStorage::U32(bytemuck::pod_collect_to_vec(&bytes)),
        })
    }

    /// The whole buffer on the host (small control data such as ids).
    pub(crate) fn to_host_whole(&self) -> Result<CpuStorage> {
        self.download(&Layout::contiguous(&[self.len]))
    }

    /// Ids as an i64 device buffer (u32 ids are widened), contiguous in the view's order.
    pub(crate) fn ids_i64(&self, layout: &Layout, op: &'static str) -> Result<GpuStorage> {
        match self.dtype {
            DType::I64 => self.copy_strided_gpu(layout),
            DType::U32 => self.cast_gpu(layout, DType::I64),
            other => Err(Error::dtype(op, format!("indices must be i64 or u32, got {other}"))),
        }
    }
}
