//! How a tensor's elements sit in its storage: shape, strides (in elements; 0 for a broadcast
//! dimension) and offset. Every view op (reshape, permute, narrow, broadcast) is a new Layout over
//! the same storage; nothing is copied until an op needs contiguous data.

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Numpy-style broadcast of two shapes (aligned at the right).
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(Error::shape(op, format!("cannot broadcast {a:?} with {b:?}"))),
        };
    }
    Ok(out)
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        Layout { shape, strides, offset }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major with no gaps (size-1 dimensions may carry any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// The storage range [offset, offset+len) when contiguous.
    pub fn contiguous_range(&self) -> Option<(usize, usize)> {
        self.is_contiguous().then(|| (self.offset, self.offset + self.elem_count()))
    }

    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if !self.is_contiguous() {
            return None;
        }
        Some(Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: self.offset,
        })
    }

    pub fn permute(&self, dims: &[usize]) -> Result<Layout> {
        let mut seen = vec![false; self.rank()];
        if dims.len() != self.rank() || dims.iter().any(|&d| d >= self.rank() || std::mem::replace(&mut seen[d], true)) {
            return Err(Error::shape(
                "permute",
                format!("{dims:?} is not a permutation of the {} dims of {:?}", self.rank(), self.shape),
            ));
        }
        Ok(Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        })
    }

    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Layout> {
        if dim >= self.rank() || start + len > self.shape[dim] {
            return Err(Error::index(
                "narrow",
                format!("dim {dim} range {start}..{} out of bounds for shape {:?}", start + len, self.shape),
            ));
        }
        let mut shape = self.shape.clone();
        shape[dim] = len;
        Ok(Layout {
            shape,
            strides: self.strides.clone(),
            offset: self.offset + start * self.strides[dim],
        })
    }

    /// Broadcast to `shape` (which may add leading dims) with stride 0 on the broadcast dims.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Layout> {
        if shape.len() < self.rank() {
            return Err(Error::shape("broadcast", format!("cannot broadcast {:?} to {shape:?}", self.shape)));
        }
        let extra = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for (i, &d) in shape.iter().enumerate().skip(extra) {
            let src = self.shape[i - extra];
            strides[i] = if src == d {
                self.strides[i - extra]
            } else if src == 1 {
                0
            } else {
                return Err(Error::shape("broadcast", format!("cannot broadcast {:?} to {shape:?}", self.shape)));
            };
        }
        Ok(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }

    /// Offsets of every element in row-major order of the shape.
    pub fn offsets(&self) -> StridedOffsets<'_> {
        StridedOffsets {
            layout: self,
            index: vec![0; self.rank()],
            next: Some(self.offset),
            remaining: self.elem_count(),
        }
    }

    /// The layout as (outer offsets, inner block): the innermost run of dimensions that is
    /// contiguous is returned as a block length, so copies can move whole runs.
    pub fn blocks(&self) -> (Vec<usize>, usize) {
        let mut block = 1;
        let mut split = self.rank();
        for i in (0..self.rank()).rev() {
            if self.strides[i] == block || self.shape[i] == 1 {
                block *= self.shape[i];
                split = i;
            } else {
                break;
            }
        }
        let outer = Layout {
            shape: self.shape[..split].to_vec(),
            strides: self.strides[..split].to_vec(),
            offset: self.offset,
        };
        if self.elem_count() == 0 {
            return (vec![], block);
        }
        (outer.offsets().collect(), block)
    }
}

pub struct StridedOffsets<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: Option<usize>,
    remaining: usize,
}

impl Iterator for StridedOffsets<'_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        let cur = self.next?;
        self.remaining -= 1;
        let mut off = cur;
        for d in (0..self.index.len()).rev() {
            self.index[d] += 1;
            off += self.layout.strides[d];
            if self.index[d] < self.layout.shape[d] {
                self.next = Some(off);
                return Some(cur);
            }
            off -= self.layout.strides[d] * self.index[d];
            self.index[d] = 0;
        }
        self.next = None;
        Some(cur)
    }
}
