//! Batched matrix product with broadcasting batch dims, optionally plus a bias row, and its
//! backward (dA = dC B^T, dB = A^T dC, each summed over the batch dims its operand was broadcast
//! on; dbias = dC summed over every row).

use super::same_device_dtype;
use crate::{layout::broadcast_shape, profile, Error, Result, Tensor};

impl Tensor {
    /// [.., m, k] x [.., k, n] -> [.., m, n]. Transposed views are read in place.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let _profile = profile::op("matmul", [self, rhs]);
        self.product(rhs, None)
    }

    /// self.matmul(rhs) + bias, with bias [n] added to every row: one op, so the CPU GEMM starts
    /// its sums from the bias instead of adding it in a second pass over the output (Linear's
    /// forward). Its backward adds dbias = the sum of dC over all rows.
    pub fn matmul_bias(&self, rhs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let _profile = profile::op("matmul_bias", [self, rhs, bias]);
        self.product(rhs, Some(bias))
    }

    fn product(&self, rhs: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let op = if bias.is_some() { "matmul_bias" } else { "matmul" };
        same_device_dtype(op, &[&[self, rhs][..], bias.as_slice()].concat())?;
        let (ra, rb) = (self.rank(), rhs.rank());
        if ra < 2 || rb < 2 || self.dims()[ra - 1] != rhs.dims()[rb - 2] {
            return Err(Error::shape(op, format!("{:?} x {:?}", self.dims(), rhs.dims())));
        }
        let (m, n) = (self.dims()[ra - 2], rhs.dims()[rb - 1]);
        let k = self.dims()[ra - 1];
        let batch = broadcast_shape(op, &self.dims()[..ra - 2], &rhs.dims()[..rb - 2])?;
        let la = self.broadcast_layout(&[batch.as_slice(), &[m, k]].concat())?;
        let lb = rhs.broadcast_layout(&[batch.as_slice(), &[k, n]].concat())?;
        let out_shape = [batch.as_slice(), &[m, n]].concat();
        let storage = match bias {
            None => self.storage().matmul(&la, &**rhs.storage(), &lb, rhs.constant_derived())?,
            Some(bias) => {
                if bias.dims() != [n] {
                    return Err(Error::shape(op, format!("bias {:?} for a product of {n} columns", bias.dims())));
                }
                let lbias = bias.broadcast_layout(&out_shape)?;
                self.storage()
                    .matmul_bias(&la, &**rhs.storage(), &lb, rhs.constant_derived(), &**bias.storage(), &lbias)?
            }
        };
        let out = Tensor::from_storage(storage, &out_shape);
        let inputs = [&[self, rhs][..], bias.as_slice()].concat();
        let (a, b, bias) = (self.clone(), rhs.clone(), bias.cloned());
        Ok(out.record(op, &inputs, move |g| {
            let ga = if a.requires_grad() {
                Some(g.matmul(&b.t()?)?.sum_to(a.dims())?)
            } else {
                None
            };
            let gb = if b.requires_grad() {
                // B as the transpose of a row-major matrix (x W^T): dB = (dC^T A)^T, computed in
                // that matrix's order, so W's gradient arrives contiguous and the optimiser reads
                // it in place instead of gathering a transposed view.
                let transposed_matrix = b.rank() == 2 && a.rank() == 2 && b.layout().strides() == [1, b.dims()[0]];
                let gb = if transposed_matrix {
                    g.t()?.matmul(&a)?.t()?
                } else {
                    a.t()?.matmul(g)?
                };
                Some(gb.sum_to(b.dims())?)
            } else {
                None
            };
            let mut grads = vec![ga, gb];
            if let Some(bias) = &bias {
                grads.push(if bias.requires_grad() { Some(g.sum_to(bias.dims())?) } else { None });
            }
            Ok(grads)
        }))
    }
}
