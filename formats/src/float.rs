//! Unquantised element types: F32, F16 and BF16 (little-endian), converted exactly as ggml does.
//!
//! F16 → f32 and BF16 → f32 are exact. f32 → F16 rounds to nearest even (what ggml's
//! `GGML_FP32_TO_FP16` does on x86 with F16C). f32 → BF16 rounds to nearest even and turns NaN
//! into a quiet NaN, matching `ggml_compute_fp32_to_bf16`.

use half::f16;

/// Decode little-endian f32 values.
pub fn decode_f32(src: &[u8], dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Decode little-endian IEEE half values.
pub fn decode_f16(src: &[u8], dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
}

/// Decode little-endian bfloat16 values.
pub fn decode_bf16(src: &[u8], dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// Encode as little-endian f32.
pub fn encode_f32(src: &[f32], dst: &mut [u8]) {
    for (v, b) in src.iter().zip(dst.chunks_exact_mut(4)) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

/// Encode as little-endian IEEE half, rounding to nearest even.
pub fn encode_f16(src: &[f32], dst: &mut [u8]) {
    for (v, b) in src.iter().zip(dst.chunks_exact_mut(2)) {
        b.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
    }
}

/// Encode as little-endian bfloat16, rounding to nearest even.
pub fn encode_bf16(src: &[f32], dst: &mut [u8]) {
    for (v, b) in src.iter().zip(dst.chunks_exact_mut(2)) {
        b.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
    }
}

/// bfloat16 bits to f32 (exact).
#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// f32 to bfloat16 bits, round to nearest even; NaN becomes a quiet NaN.
#[inline]
pub fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// f16 bits to f32 (exact).
#[inline]
pub fn f16_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// f32 to f16 bits, round to nearest even.
#[inline]
pub fn f32_to_f16(v: f32) -> u16 {
    f16::from_f32(v).to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_round_trip_and_rounding() {
        for v in [0.0f32, -0.0, 1.0, -2.5, 3.0e38, 1.0e-39] {
            let b = f32_to_bf16(v);
            assert_eq!(f32_to_bf16(bf16_to_f32(b)), b);
        }
        // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (1.0).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), f32_to_bf16(1.0));
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn f16_round_trip() {
        let src = [0.5f32, -1.25, 65504.0, 6.0e-8];
        let mut bytes = [0u8; 8];
        encode_f16(&src, &mut bytes);
        let mut back = [0f32; 4];
        decode_f16(&bytes, &mut back);
        assert_eq!(back[..3], src[..3]);
    }
}
