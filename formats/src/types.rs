//! The ggml tensor type table: every type id in ggml.h, with its name, block size and block bytes.
//!
//! Facts from `ggml/include/ggml.h` and the `type_traits` table in `ggml/src/ggml.c` of the llama.cpp
//! sources vendored by `llama-cpp-sys-2` 0.1.161. Ids 4, 5 and 31–33, 36–38 were removed from ggml
//! and are treated as unknown.
//!
//! The table also holds this project's own QE formats (ids 200..=208, [`GgmlType::is_qe`]),
//! far above ggml's range (ggml's ids end below 64). Stock ggml cannot load them; see
//! [`crate::qe`] and `formats/SPEC.md`.

use std::fmt;

/// Number of weights in a k-quant super-block (`QK_K` in ggml).
pub const QK_K: usize = 256;

macro_rules! ggml_types {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $name:literal, $block:expr, $bytes:expr; )*) => {
        /// A ggml tensor type, as stored in a GGUF tensor info.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum GgmlType {
            $( $(#[$doc])* $variant = $id, )*
        }

        impl GgmlType {
            /// Every known type, in id order.
            pub const ALL: &'static [GgmlType] = &[ $( GgmlType::$variant, )* ];

            /// The type with this GGUF id, or `None` for ids ggml does not define (or has removed).
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $( $id => Some(GgmlType::$variant), )*
                    _ => None,
                }
            }

            /// The name llama.cpp prints and `llama-quantize` accepts (upper case, e.g. `Q4_K`).
            pub fn name(self) -> &'static str {
                match self { $( GgmlType::$variant => $name, )* }
            }

            /// Weights per block.
            pub const fn block_size(self) -> usize {
                match self { $( GgmlType::$variant => $block, )* }
            }

            /// Bytes per block.
            pub const fn type_size(self) -> usize {
                match self { $( GgmlType::$variant => $bytes, )* }
            }
        }
    };
}

ggml_types! {
    /// 32-bit IEEE float.
    F32 = 0, "F32", 1, 4;
    /// 16-bit IEEE float.
    F16 = 1, "F16", 1, 2;
    /// 4-bit, 32-weight blocks, f16 scale, symmetric (code − 8).
    Q4_0 = 2, "Q4_0", 32, 18;
    /// 4-bit, 32-weight blocks, f16 scale and min.
    Q4_1 = 3, "Q4_1", 32, 20;
    /// 5-bit, 32-weight blocks, f16 scale, symmetric (code − 16).
    Q5_0 = 6, "Q5_0", 32, 22;
    /// 5-bit, 32-weight blocks, f16 scale and min.
    Q5_1 = 7, "Q5_1", 32, 24;
    /// 8-bit, 32-weight blocks, f16 scale.
    Q8_0 = 8, "Q8_0", 32, 34;
    /// 8-bit, 32-weight blocks, f16 scale and f16 sum (activation type).
    Q8_1 = 9, "Q8_1", 32, 36;
    /// 2-bit k-quant.
    Q2_K = 10, "Q2_K", QK_K, 84;
    /// 3-bit k-quant.
    Q3_K = 11, "Q3_K", QK_K, 110;
    /// 4-bit k-quant.
    Q4_K = 12, "Q4_K", QK_K, 144;
    /// 5-bit k-quant.
    Q5_K = 13, "Q5_K", QK_K, 176;
    /// 6-bit k-quant.
    Q6_K = 14, "Q6_K", QK_K, 210;
    /// 8-bit k-quant (activation type).
    Q8_K = 15, "Q8_K", QK_K, 292;
    /// 2.06 bpw i-quant.
    IQ2_XXS = 16, "IQ2_XXS", QK_K, 66;
    /// 2.31 bpw i-quant.
    IQ2_XS = 17, "IQ2_XS", QK_K, 74;
    /// 3.06 bpw i-quant.
    IQ3_XXS = 18, "IQ3_XXS", QK_K, 98;
    /// 1.56 bpw i-quant.
    IQ1_S = 19, "IQ1_S", QK_K, 50;
    /// 4-bit non-linear grid, 32-weight blocks.
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    /// 3.44 bpw i-quant.
    IQ3_S = 21, "IQ3_S", QK_K, 110;
    /// 2.5 bpw i-quant.
    IQ2_S = 22, "IQ2_S", QK_K, 82;
    /// 4.25 bpw non-linear grid with 6-bit sub-block scales.
    IQ4_XS = 23, "IQ4_XS", QK_K, 136;
    /// 8-bit integer.
    I8 = 24, "I8", 1, 1;
    /// 16-bit integer.
    I16 = 25, "I16", 1, 2;
    /// 32-bit integer.
    I32 = 26, "I32", 1, 4;
    /// 64-bit integer.
    I64 = 27, "I64", 1, 8;
    /// 64-bit IEEE float.
    F64 = 28, "F64", 1, 8;
    /// 1.75 bpw i-quant.
    IQ1_M = 29, "IQ1_M", QK_K, 56;
    /// bfloat16.
    BF16 = 30, "BF16", 1, 2;
    /// Ternary, 1.69 bpw.
    TQ1_0 = 34, "TQ1_0", QK_K, 54;
    /// Ternary, 2.06 bpw.
    TQ2_0 = 35, "TQ2_0", QK_K, 66;
    /// Microscaling FP4 (E2M1 with an E8M0 scale per 32).
    MXFP4 = 39, "MXFP4", 32, 17;
    /// NVIDIA FP4 (E2M1 with four UE4M3 scales per 64).
    NVFP4 = 40, "NVFP4", 64, 36;
    /// 1-bit, 128-weight blocks, f16 scale.
    Q1_0 = 41, "Q1_0", 128, 18;
    /// 2-bit, 64-weight blocks, f16 scale.
    Q2_0 = 42, "Q2_0", 64, 18;
    /// QuantEase 2-bit codes, no outlier pool (2.5 bpw). Not a ggml type: see `qe`.
    QE2_0 = 200, "QE2_0", 32, 10;
    /// QuantEase 2-bit codes, 1 pool byte per block (2.75 bpw, one outlier per 128 weights).
    QE2_1 = 201, "QE2_1", 32, 11;
    /// QuantEase 2-bit codes, 2 pool bytes per block (3.0 bpw, one outlier per 64 weights).
    QE2_2 = 202, "QE2_2", 32, 12;
    /// QuantEase 3-bit codes, no outlier pool (3.5 bpw).
    QE3_0 = 203, "QE3_0", 32, 14;
    /// QuantEase 3-bit codes, 1 pool byte per block (3.75 bpw).
    QE3_1 = 204, "QE3_1", 32, 15;
    /// QuantEase 3-bit codes, 2 pool bytes per block (4.0 bpw).
    QE3_2 = 205, "QE3_2", 32, 16;
    /// QuantEase 4-bit codes, no outlier pool (4.5 bpw).
    QE4_0 = 206, "QE4_0", 32, 18;
    /// QuantEase 4-bit codes, 1 pool byte per block (4.75 bpw).
    QE4_1 = 207, "QE4_1", 32, 19;
    /// QuantEase 4-bit codes, 2 pool bytes per block (5.0 bpw).
    QE4_2 = 208, "QE4_2", 32, 20;
}

impl GgmlType {
    /// The GGUF id of this type.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Parse a type name, case-insensitively (`q4_k`, `Q4_K`, `f16`).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Bits per weight of the packed format.
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }

    /// Bytes of a row of `n` weights, or `None` if `n` is not a multiple of the block size
    /// (or the byte count overflows).
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }

    /// True for types whose blocks are quantised (block size > 1).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// True for this project's QE formats (ids 200..=208), which are not ggml types: stock
    /// ggml/llama.cpp cannot load them, and a QE row must always be handled as a whole row
    /// (its outlier pool sits after the row's blocks).
    pub fn is_qe(self) -> bool {
        (crate::qe::QE_TYPE_FIRST..crate::qe::QE_TYPE_FIRST + 9).contains(&self.id())
    }

    /// True for types defined by ggml itself (every type except the QE formats).
    pub fn is_ggml(self) -> bool {
        !self.is_qe()
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_are_unique() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
            assert_eq!(GgmlType::from_name(&t.name().to_lowercase()), Some(t));
        }
        for removed in [4u32, 5, 31, 32, 33, 36, 37, 38, 43, 199, 209, 1000] {
            assert_eq!(GgmlType::from_id(removed), None);
        }
    }

    #[test]
    fn sizes_match_ggml() {
        assert_eq!(GgmlType::Q4_0.bits_per_weight(), 4.5);
        assert_eq!(GgmlType::Q4_K.bits_per_weight(), 4.5);
        assert_eq!(GgmlType::Q6_K.bits_per_weight(), 6.5625);
        assert_eq!(GgmlType::IQ4_XS.bits_per_weight(), 4.25);
        assert_eq!(GgmlType::Q4_0.row_bytes(576), Some(18 * 18));
        assert_eq!(GgmlType::Q4_K.row_bytes(576), None);
    }

    #[test]
    fn qe_types_follow_the_contract() {
        let qe: Vec<GgmlType> = GgmlType::ALL
            .iter()
            .copied()
            .filter(|t| t.is_qe())
            .collect();
        assert_eq!(qe.len(), 9);
        for (i, &t) in qe.iter().enumerate() {
            let (b, s) = (2 + i / 3, i % 3);
            assert_eq!(t.id(), 200 + 3 * (b as u32 - 2) + s as u32);
            assert_eq!(t.name(), format!("QE{b}_{s}"));
            assert_eq!(t.block_size(), 32);
            assert_eq!(t.type_size(), 2 + 4 * b + s);
            assert!(t.is_quantized() && !t.is_ggml());
        }
        assert_eq!(GgmlType::QE3_1.bits_per_weight(), 3.75);
        assert_eq!(GgmlType::QE2_1.bits_per_weight(), 2.75);
        assert_eq!(GgmlType::QE4_1.bits_per_weight(), 4.75);
        assert_eq!(GgmlType::QE3_0.bits_per_weight(), 3.5);
        assert!(GgmlType::ALL
            .iter()
            .filter(|t| t.is_ggml())
            .all(|t| t.id() < 64));
    }
}
