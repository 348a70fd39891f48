//! Patchify: images [B, C, H, W] to patch rows [B, (H/P)(W/P), C*P*P], each row ordered
//! (channel, dy, dx) like a conv weight [D, C, P, P] flattened. With a matmul it is the ViT
//! patch embedding (a conv with stride = kernel = P). One strided copy each way.

use crate::{profile, Error, Result, Tensor};

impl Tensor {
    pub fn patchify(&self, patch: usize) -> Result<Tensor> {
        let _profile = profile::op("patchify", [self]);
        let &[b, c, h, w] = self.dims() else {
            return Err(Error::shape("patchify", format!("expected [B, C, H, W], got {:?}", self.dims())));
        };
        if patch == 0 || !h.is_multiple_of(patch) || !w.is_multiple_of(patch) {
            return Err(Error::shape(
                "patchify",
                format!("image {h}x{w} is not a multiple of patch size {patch}"),
            ));
        }
        let (gh, gw) = (h / patch, w / patch);
        let view = crate::Layout::contiguous(&[b, c, gh, patch, gw, patch]);
        // [b, c, gh, p, gw, p] -> [b, gh, gw, c, p, p]
        let src = self.contiguous_copy_if_needed()?;
        let layout =
            crate::Layout::new(view.shape().to_vec(), view.strides().to_vec(), src.layout().offset()).permute(&[0, 2, 4, 1, 3, 5])?;
        let storage = src.storage().copy_strided(&layout)?;
        let out = Tensor::from_storage(storage, &[b, gh * gw, c * patch * patch]);
        Ok(out.record("patchify", &[self], move |g| Ok(vec![Some(g.unpatchify(patch, c, h, w)?)])))
    }

    /// The inverse of patchify: [B, N, C*P*P] back to [B, C, H, W].
    pub fn unpatchify(&self, patch: usize, c: usize, h: usize, w: usize) -> Result<Tensor> {
        let _profile = profile::op("unpatchify", [self]);
        let (gh, gw) = (h / patch.max(1), w / patch.max(1));
        let &[b, n, e] = self.dims() else {
            return Err(Error::shape("unpatchify", format!("expected [B, N, C*P*P], got {:?}", self.dims())));
        };
        if patch == 0 || n != gh * gw || e != c * patch * patch || !h.is_multiple_of(patch) || !w.is_multiple_of(patch) {
            return Err(Error::shape(
                "unpatchify",
                format!("{:?} does not hold {c}x{h}x{w} images in {patch}x{patch} patches", self.dims()),
            ));
        }
        let src = self.contiguous_copy_if_needed()?;
        // [b, gh, gw, c, p, p] viewed, permuted to [b, c, gh, p, gw, p].
        let view = crate::Layout::contiguous(&[b, gh, gw, c, patch, patch]);
        let layout =
            crate::Layout::new(view.shape().to_vec(), view.strides().to_vec(), src.layout().offset()).permute(&[0, 3, 1, 4, 2, 5])?;
        let storage = src.storage().copy_strided(&layout)?;
        let out = Tensor::from_storage(storage, &[b, c, h, w]);
        Ok(out.record("unpatchify", &[self], move |g| Ok(vec![Some(g.patchify(patch)?)])))
    }

    fn contiguous_copy_if_needed(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            Ok(self.detach())
        } else {
            self.contiguous_copy()
        }
    }
}
