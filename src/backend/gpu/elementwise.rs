//! Activations, broadcasting binary ops, comparisons and select (kernels/elementwise.cu).

use super::runtime::{elementwise_config, Args, StridedLayout};
use super::{float_suffix, GpuStorage};
use crate::backend::{BinaryOp, CmpOp, UnaryOp};
use crate::{Error, Layout, Result};

/// The kernel's op code and its two scalar parameters.
fn unary_code(op: UnaryOp) -> (i32, f32, f32) {
    match op {
        UnaryOp::Neg => (0, 0.0, 0.0),
        UnaryOp::Exp => (1, 0.0, 0.0),
        UnaryOp::Log => (2, 0.0, 0.0),
        UnaryOp::Sqrt => (3, 0.0, 0.0),
        UnaryOp::Rsqrt => (4, 0.0, 0.0),
        UnaryOp::Tanh => (5, 0.0, 0.0),
        UnaryOp::Sigmoid => (6, 0.0, 0.0),
        UnaryOp::Relu => (7, 0.0, 0.0),
        UnaryOp::Abs => (8, 0.0, 0.0),
        UnaryOp::Sqr => (9, 0.0, 0.0),
        UnaryOp::Recip => (10, 0.0, 0.0),
        UnaryOp::Gelu => (11, 0.0, 0.0),
        UnaryOp::GeluTanh => (12, 0.0, 0.0),
        UnaryOp::QuickGelu => (13, 0.0, 0.0),
        UnaryOp::Silu => (14, 0.0, 0.0),
        UnaryOp::Affine { mul, add } => (15, mul as f32, add as f32),
        UnaryOp::Powf(e) => (16, e as f32, 0.0),
    }
}

fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Maximum => 4,
        BinaryOp::Minimum => 5,
    }
}

fn cmp_code(op: CmpOp) -> i32 {
    match op {
        CmpOp::Eq => 0,
        CmpOp::Ne => 1,
        CmpOp::Lt => 2,
        CmpOp::Le => 3,
        CmpOp::Gt => 4,
        CmpOp::Ge => 5,
    }
}

impl GpuStorage {
    fn same_dtype(&self, other: &GpuStorage, op: &'static str) -> Result<()> {
        if self.dtype != other.dtype {
            return Err(Error::dtype(op, format!("operands of {} and {}", self.dtype, other.dtype)));
        }
        Ok(())
    }

    pub(crate) fn unary_gpu(&self, layout: &Layout, op: UnaryOp) -> Result<GpuStorage> {
        let n = layout.elem_count();
        let out = self.new_like(n, self.dtype)?;
        if n > 0 {
            let (code, p0, p1) = unary_code(op);
            let mut args = Args::new();
            args.ptr(self.ptr())
                .push(StridedLayout::from_layout(layout, "unary")?)
                .ptr(out.ptr())
                .i64(n as i64)
                .i32(code)
                .f32(p0)
                .f32(p1);
            self.launch(
                &format!("unary_{}", float_suffix(self.dtype, "unary")?),
                elementwise_config(n),
                &mut args,
            )?;
        }
        Ok(out)
    }

    pub(crate) fn unary_backward_gpu(&self, layout: &Layout, grad: &GpuStorage, grad_layout: &Layout, op: UnaryOp) -> Result<GpuStorage> {
        self.same_dtype(grad, "unary_backward")?;
        let n = layout.elem_count();
        let out = self.new_like(n, self.dtype)?;
        if n > 0 {
            let (code, p0, p1) = unary_code(op);
            let mut args = Args::new();
            args.ptr(self.ptr())
                .push(StridedLayout::from_layout(layout, "unary_backward")?)
                .ptr(grad.ptr())
                .push(StridedLayout::from_layout(grad_layout, "unary_backward")?)
                .ptr(out.ptr())
                .i64(n as i64)
                .i32(code)
                .f32(p0)
                .f32(p1);
            self.launch(
                &format!("unary_bwd_{}", float_suffix(self.dtype, "unary_backward")?),
                elementwise_config(n),
                &mut args,
            )?;
        }
        Ok(out)
    }

    fn zip_launch(
        &self,
        kernel: &str,
        op: &'static str,
        layout: &Layout,
        rhs: &GpuStorage,
        rhs_layout: &Layout,
        code: i32,
    ) -> Result<GpuStorage> {
        self.same_dtype(rhs, op)?;
        let n = layout.elem_count();
        let out = self.new_like(n, self.dtype)?;
        if n > 0 {
            let mut args = Args::new();
            args.ptr(self.ptr())
                .push(StridedLayout::from_layout(layout, op)?)
                .ptr(rhs.ptr())
                .push(StridedLayout::from_layout(rhs_layout, op)?)
                .ptr(out.ptr())
                .i64(n as i64)
                .i32(code);
            self.launch(
                &format!("{kernel}_{}", float_suffix(self.dtype, op)?),
                elementwise_config(n),
                &mut args,
            )?;
        }
        Ok(out)
    }

    pub(crate) fn binary_gpu(&self, layout: &Layout, rhs: &GpuStorage, rhs_layout: &Layout, op: BinaryOp) -> Result<GpuStorage> {
        self.zip_launch("binary", "binary", layout, rhs, rhs_layout, binary_code(op))
    }

    pub(crate) fn cmp_gpu(&self, layout: &Layout, rhs: &GpuStorage, rhs_layout: &Layout, op: CmpOp) -> Result<GpuStorage> {
        self.zip_launch("cmp", "cmp", layout, rhs, rhs_layout, cmp_code(op))
    }

    pub(crate) fn where_gpu(&self, layout: &Layout, t: (&GpuStorage, &Layout), f: (&GpuStorage, &Layout)) -> Result<GpuStorage> {
        t.0.same_dtype(f.0, "where")?;
        let n = layout.elem_count();
        // The kernel takes the condition in the branches' dtype.
        let (cond, cond_layout) = if self.dtype == t.0.dtype {
            (self.clone(), layout.clone())
        } else {
            (self.cast_gpu(layout, t.0.dtype)?, Layout::contiguous(layout.shape()))
        };
        let out = self.new_like(n, t.0.dtype)?;
        if n > 0 {
            let mut args = Args::new();
            args.ptr(cond.ptr())
                .push(StridedLayout::from_layout(&cond_layout, "where")?)
                .ptr(t.0.ptr())
                .push(StridedLayout::from_layout(t.1, "where")?)
                .ptr(f.0.ptr())
                .push(StridedLayout::from_layout(f.1, "where")?)
                .ptr(out.ptr())
                .i64(n as i64);
            self.launch(
                &format!("where_cond_{}", float_suffix(t.0.dtype, "where")?),
                elementwise_config(n),
                &mut args,
            )?;
        }
        Ok(out)
    }
}
