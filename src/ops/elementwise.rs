//! Elementwise ops: activations, scalar ops, broadcasting binary ops, comparisons, select and
//! dropout.

use super::{same_device, same_device_dtype};
use crate::backend::{BinaryOp, CmpOp, UnaryOp};
use crate::{layout::broadcast_shape, profile, Error, Result, Rng, Tensor};

impl Tensor {
    fn float_check(&self, op: &'static str) -> Result<()> {
        if !self.dtype().is_float() {
            return Err(Error::dtype(op, format!("needs a float tensor, got {}", self.dtype())));
        }
        Ok(())
    }

    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        let _profile = profile::op(op.name(), [self]);
        self.float_check("unary")?;
        let out = Tensor::from_storage(self.storage().unary(self.layout(), op)?, self.dims());
        let x = self.clone();
        Ok(out.record(op.name(), &[self], move |g| {
            let dx = x.storage().unary_backward(x.layout(), &**g.storage(), g.layout(), op)?;
            Ok(vec![Some(Tensor::from_storage(dx, x.dims()))])
        }))
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Neg)
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp)
    }
    pub fn log(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt)
    }
    pub fn rsqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Rsqrt)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Tanh)
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sigmoid)
    }
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu)
    }
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Abs)
    }
    pub fn sqr(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqr)
    }
    pub fn recip(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Recip)
    }
    /// GELU, erf form (`gelu` in Hugging Face configs).
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Gelu)
    }
    /// GELU, tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::GeluTanh)
    }
    /// x * sigmoid(1.702 x) (`quick_gelu`, OpenAI CLIP).
    pub fn quick_gelu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::QuickGelu)
    }
    pub fn silu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Silu)
    }
    pub fn powf(&self, e: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(e))
    }
    /// x * mul + add.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Affine { mul, add })
    }
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, v)
    }
    pub fn sub_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, -v)
    }
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(v, 0.0)
    }
    pub fn div_scalar(&self, v: f64) -> Result<Tensor> {
        if v == 0.0 {
            return Err(Error::msg("div_scalar: division by zero"));
        }
        self.affine(1.0 / v, 0.0)
    }

    /// A broadcasting binary op; gradients are summed back to each operand's shape.
    pub fn binary(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        let _profile = profile::op(op.name(), [self, rhs]);
        same_device_dtype("binary", &[self, rhs])?;
        self.float_check("binary")?;
        let shape = broadcast_shape("binary", self.dims(), rhs.dims())?;
        let (la, lb) = (self.broadcast_layout(&shape)?, rhs.broadcast_layout(&shape)?);
        let storage = self.storage().binary(&la, &**rhs.storage(), &lb, op)?;
        let out = Tensor::from_storage(storage, &shape);
        let (a, b) = (self.clone(), rhs.clone());
        Ok(out.record(op.name(), &[self, rhs], move |g| {
            let (ga, gb) = match op {
                BinaryOp::Add => (g.clone(), g.clone()),
                BinaryOp::Sub => (g.clone(), g.neg()?),
                BinaryOp::Mul => (g.mul(&b)?, g.mul(&a)?),
                BinaryOp::Div => (g.div(&b)?, g.mul(&a)?.div(&b.sqr()?)?.neg()?),
                BinaryOp::Maximum | BinaryOp::Minimum => {
                    let picks_a = if op == BinaryOp::Maximum {
                        a.cmp(&b, CmpOp::Ge)?
                    } else {
                        a.cmp(&b, CmpOp::Le)?
                    };
                    (g.mul(&picks_a)?, g.mul(&picks_a.affine(-1.0, 1.0)?)?)
                }
            };
            Ok(vec![Some(ga.sum_to(a.dims())?), Some(gb.sum_to(b.dims())?)])
        }))
    }

    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Add)
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Sub)
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Mul)
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Div)
    }
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Maximum)
    }
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Minimum)
    }

    /// 1 where the comparison holds, else 0 (same dtype; not differentiable).
    pub fn cmp(&self, rhs: &Tensor, op: CmpOp) -> Result<Tensor> {
        let _profile = profile::op("cmp", [self, rhs]);
        same_device_dtype("cmp", &[self, rhs])?;
        let shape = broadcast_shape("cmp", self.dims(), rhs.dims())?;
        let (la, lb) = (self.broadcast_layout(&shape)?, rhs.broadcast_layout(&shape)?);
        let storage = self.storage().cmp(&la, &**rhs.storage(), &lb, op)?;
        Ok(Tensor::from_storage(storage, &shape))
    }

    /// Elementwise `cond != 0 ? on_true : on_false`, all three broadcast together.
    pub fn where_cond(cond: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let _profile = profile::op("where", [cond, on_true, on_false]);
        same_device_dtype("where", &[on_true, on_false])?;
        same_device("where", &[cond, on_true])?;
        let shape = broadcast_shape("where", &broadcast_shape("where", cond.dims(), on_true.dims())?, on_false.dims())?;
        let lc = cond.broadcast_layout(&shape)?;
        let (lt, lf) = (on_true.broadcast_layout(&shape)?, on_false.broadcast_layout(&shape)?);
        let storage = cond
            .storage()
            .where_cond(&lc, (&**on_true.storage(), &lt), (&**on_false.storage(), &lf))?;
        let out = Tensor::from_storage(storage, &shape);
        let (c, t, f) = (cond.clone(), on_true.clone(), on_false.clone());
        Ok(out.record("where", &[on_true, on_false], move |g| {
            let zero = Tensor::zeros(&[], g.dtype(), g.device())?;
            let gt = Tensor::where_cond(&c, g, &zero)?.sum_to(t.dims())?;
            let gf = Tensor::where_cond(&c, &zero, g)?.sum_to(f.dims())?;
            Ok(vec![Some(gt), Some(gf)])
        }))
    }

    /// `value` where `mask` is nonzero, self elsewhere.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        let fill = Tensor::full(value, &[], self.dtype(), self.device())?;
        Tensor::where_cond(mask, &fill, self)
    }

    /// Zeroes each element with probability p and scales the rest by 1/(1-p). The mask is drawn
    /// from `rng` on the host, so a seed reproduces it on every device.
    pub fn dropout(&self, p: f64, rng: &mut Rng) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::msg(format!("dropout: probability {p} outside [0, 1)")));
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        let keep = 1.0 / (1.0 - p);
        let values: Vec<f64> = (0..self.elem_count()).map(|_| if rng.uniform() < p { 0.0 } else { keep }).collect();
        let mask = Tensor::from_cpu_storage(
            crate::backend::CpuStorage::from_f64(&values, self.dtype()),
            self.dims(),
            self.device(),
        )?;
        self.mul(&mask)
    }
}
