//! quantease-gguf: turn downloaded LLM weights into small, high-quality GGUF files.
//!
//! Data enters through [`gguf`] (and later safetensors) sources, is planned and transformed in
//! the converter, and leaves through the streaming GGUF writer.

#![warn(missing_docs)]

pub use quantease_formats as formats;

pub mod gguf;
pub mod imatrix;
