//! Turning text and images into model inputs: the CLIP BPE tokenizer and CLIP's image
//! preprocessing.

pub mod captions;
pub mod idx;
pub mod image;
pub mod shapes;
pub mod tokenizer;
