//! quantease-gguf: turn downloaded LLM weights into small, high-quality GGUF files.
//!
//! Data enters through [`gguf`] (and later safetensors) sources, is planned and transformed in
//! the converter, and leaves through the streaming GGUF writer.
//!
//! With the `llama` feature (on by default), [`llama`] drives llama.cpp itself for calibration,
//! the `llama_model_quantize` baseline and ggml's kernels, and [`eval`] measures perplexity and
//! KL divergence exactly as `llama-perplexity` does.

#![warn(missing_docs)]

pub use quantease_formats as formats;

#[cfg(feature = "llama")]
pub mod eval;
#[cfg(feature = "llama")]
pub mod llama;
