//! Kernel tests (SIMD vs scalar) — filled in with the SIMD kernels.
