//! Turning text and images into model inputs: the CLIP BPE tokenizer and CLIP's image
//! preprocessing, and the datasets (the generated `shapes` set with its captions and questions,
//! folders of captioned images or of questions).

pub mod captions;
pub mod idx;
pub mod image;
pub mod shapes;
pub mod tokenizer;
pub mod vqa;
