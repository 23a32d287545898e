//! quantease-gguf: turn downloaded LLM weights into small, high-quality GGUF files.
//!
//! Where data enters, is transformed and leaves:
//! - [`source`]: models enter (memory-mapped GGUF, or Hugging Face safetensors directories; every
//!   decodable type yields f32 rows),
//!   with [`imatrix`] importance weights beside them;
//! - [`plan`]: which type each tensor gets (llama-quantize's mixes, overrides, width fallbacks);
//! - [`convert`]: rows are quantised by the block formats of [`formats`] and streamed out through
//!   the [`gguf`] writer;
//! - [`inspect`]: reports what a file holds;
//! - [`qe_version`]: files with QE tensors must carry this build's QE format version (checked
//!   by every reader);
//! - [`gram`]: Gram files (imatrix GGUF plus full calibration Gram matrices), written by
//!   `calibrate` (feature `llama`), which runs llama.cpp over a text.
//!
//! With the `llama` feature (on by default), `llama` drives llama.cpp itself for calibration,
//! the `llama_model_quantize` baseline and ggml's kernels, and `eval` measures perplexity and
//! KL divergence exactly as `llama-perplexity` does.

#![warn(missing_docs)]

pub use quantease_formats as formats;

#[cfg(feature = "llama")]
pub mod calibrate;
pub mod convert;
#[cfg(feature = "llama")]
pub mod eval;
pub mod gguf;
pub mod gram;
pub mod imatrix;
pub mod inspect;
#[cfg(feature = "llama")]
pub mod llama;
pub mod plan;
pub mod qe_version;
pub mod solver;
pub mod source;
