//! In-process `llama_model_quantize`: llama.cpp's own quantiser, the baseline we compare against.
//!
//! This llama.cpp version takes importance-matrix data as a C array of
//! `llama_model_imatrix_data { name, data, size }` terminated by a null name (no C++ map), with
//! one value per input column (times the number of experts) per weight: the mean squared
//! activation, i.e. `in_sum2 / counts` of an imatrix GGUF.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::Path;
use std::str::FromStr;

use llama_cpp_sys_2 as sys;

use super::{check_readable_file, clear_last_error, init, path_cstring, take_last_error};
use super::{LlamaError, Result};

macro_rules! ftypes {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $name:literal; )*) => {
        /// A llama.cpp file type (`llama_ftype`): the quantisation mix `llama-quantize` produces.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Ftype {
            $( $(#[$doc])* $variant = $id, )*
        }

        impl Ftype {
            /// Every file type, in id order.
            pub const ALL: &'static [Ftype] = &[ $( Ftype::$variant, )* ];

            /// The name `llama-quantize` accepts (e.g. `Q4_K_M`).
            pub fn name(self) -> &'static str {
                match self { $( Ftype::$variant => $name, )* }
            }
        }
    };
}

ftypes! {
    /// All tensors F32.
    F32 = 0, "F32";
    /// Mostly F16.
    F16 = 1, "F16";
    /// Mostly Q4_0.
    Q4_0 = 2, "Q4_0";
    /// Mostly Q4_1.
    Q4_1 = 3, "Q4_1";
    /// Mostly Q8_0.
    Q8_0 = 7, "Q8_0";
    /// Mostly Q5_0.
    Q5_0 = 8, "Q5_0";
    /// Mostly Q5_1.
    Q5_1 = 9, "Q5_1";
    /// Mostly Q2_K.
    Q2_K = 10, "Q2_K";
    /// Q3_K small.
    Q3_K_S = 11, "Q3_K_S";
    /// Q3_K medium.
    Q3_K_M = 12, "Q3_K_M";
    /// Q3_K large.
    Q3_K_L = 13, "Q3_K_L";
    /// Q4_K small.
    Q4_K_S = 14, "Q4_K_S";
    /// Q4_K medium.
    Q4_K_M = 15, "Q4_K_M";
    /// Q5_K small.
    Q5_K_S = 16, "Q5_K_S";
    /// Q5_K medium.
    Q5_K_M = 17, "Q5_K_M";
    /// Mostly Q6_K.
    Q6_K = 18, "Q6_K";
    /// IQ2_XXS (needs an imatrix).
    IQ2_XXS = 19, "IQ2_XXS";
    /// IQ2_XS (needs an imatrix).
    IQ2_XS = 20, "IQ2_XS";
    /// Q2_K small.
    Q2_K_S = 21, "Q2_K_S";
    /// IQ3_XS.
    IQ3_XS = 22, "IQ3_XS";
    /// IQ3_XXS.
    IQ3_XXS = 23, "IQ3_XXS";
    /// IQ1_S (needs an imatrix).
    IQ1_S = 24, "IQ1_S";
    /// Mostly IQ4_NL.
    IQ4_NL = 25, "IQ4_NL";
    /// IQ3_S.
    IQ3_S = 26, "IQ3_S";
    /// IQ3_M.
    IQ3_M = 27, "IQ3_M";
    /// IQ2_S.
    IQ2_S = 28, "IQ2_S";
    /// IQ2_M.
    IQ2_M = 29, "IQ2_M";
    /// Mostly IQ4_XS.
    IQ4_XS = 30, "IQ4_XS";
    /// IQ1_M.
    IQ1_M = 31, "IQ1_M";
    /// Mostly BF16.
    BF16 = 32, "BF16";
    /// Ternary TQ1_0.
    TQ1_0 = 36, "TQ1_0";
    /// Ternary TQ2_0.
    TQ2_0 = 37, "TQ2_0";
    /// MXFP4 for mixture-of-experts weights.
    MXFP4_MOE = 38, "MXFP4_MOE";
    /// Mostly NVFP4.
    NVFP4 = 39, "NVFP4";
    /// Mostly Q1_0.
    Q1_0 = 40, "Q1_0";
    /// Mostly Q2_0.
    Q2_0 = 41, "Q2_0";
}

impl Ftype {
    /// The `llama_ftype` value.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The file type with this `llama_ftype` value.
    pub fn from_id(id: u32) -> Option<Ftype> {
        Ftype::ALL.iter().copied().find(|f| f.id() == id)
    }
}

impl FromStr for Ftype {
    type Err = LlamaError;

    /// Parse a `llama-quantize` type name, case-insensitively (`q4_k_m`, `Q4_0`), or a number.
    fn from_str(s: &str) -> Result<Ftype> {
        let s = s.trim();
        if let Ok(id) = s.parse::<u32>() {
            return Ftype::from_id(id).ok_or_else(|| LlamaError::UnknownFtype(s.into()));
        }
        Ftype::ALL
            .iter()
            .copied()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| LlamaError::UnknownFtype(s.into()))
    }
}

impl TryFrom<&str> for Ftype {
    type Error = LlamaError;

    fn try_from(s: &str) -> Result<Ftype> {
        s.parse()
    }
}

impl std::fmt::Display for Ftype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Importance-matrix data for [`llama_quantize`]: per weight name, the mean squared input
/// activation of each column (`n_in` values, or `n_in × n_expert` for expert tensors).
#[derive(Clone, Debug, Default)]
pub struct ImatrixData {
    entries: BTreeMap<String, Vec<f32>>,
}

impl ImatrixData {
    /// An empty set.
    pub fn new() -> ImatrixData {
        ImatrixData::default()
    }

    /// Add (or replace) the importance values of weight `name`. Values must be finite and
    /// non-negative (llama.cpp aborts the whole quantisation otherwise).
    pub fn insert(&mut self, name: impl Into<String>, values: Vec<f32>) -> Result<()> {
        let name = name.into();
        let bad = |reason: String| LlamaError::Imatrix {
            name: name.clone(),
            reason,
        };
        if name.as_bytes().contains(&0) {
            return Err(bad("name contains a NUL byte".into()));
        }
        if values.is_empty() {
            return Err(bad("no values".into()));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return Err(bad(format!(
                "value {} at column {i} is not finite and non-negative",
                values[i]
            )));
        }
        self.entries.insert(name, values);
        Ok(())
    }

    /// Add weight `name` from imatrix-GGUF sums: `in_sum2` (`n_in × n_mat` sums of squares) and
    /// `counts` (`n_mat` token counts). Matrices never seen (count 0) get weight 1, as
    /// `llama-quantize` does for partial data.
    pub fn insert_from_sums(
        &mut self,
        name: impl Into<String>,
        in_sum2: &[f32],
        counts: &[f32],
    ) -> Result<()> {
        let name = name.into();
        let n_mat = counts.len();
        if n_mat == 0 || in_sum2.is_empty() || !in_sum2.len().is_multiple_of(n_mat) {
            return Err(LlamaError::Imatrix {
                name,
                reason: format!("{} sums do not split into {n_mat} matrices", in_sum2.len()),
            });
        }
        let n_in = in_sum2.len() / n_mat;
        let mut values = Vec::with_capacity(in_sum2.len());
        for (m, &c) in counts.iter().enumerate() {
            let row = &in_sum2[m * n_in..(m + 1) * n_in];
            if c > 0.0 {
                values.extend(row.iter().map(|&s| s / c));
            } else {
                values.resize(values.len() + n_in, 1.0);
            }
        }
        self.insert(name, values)
    }

    /// Number of weights with data.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no weight has data.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The values of weight `name`.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.entries.get(name).map(|v| v.as_slice())
    }
}

/// Quantise `input` to `output` with llama.cpp's `llama_model_quantize` (in process), as
/// `llama-quantize --allow-requantize [--imatrix] input output FTYPE n_threads` would: llama.cpp's
/// own type choice per tensor for `ftype`. A quantised input is dequantised first (the sources we
/// handle usually are quantised). `n_threads` 0 uses all cores.
///
/// `ftype` is an [`Ftype`] or its name (`"Q4_K_M"`).
pub fn llama_quantize<F>(
    input: &Path,
    output: &Path,
    ftype: F,
    imatrix: Option<&ImatrixData>,
    n_threads: usize,
) -> Result<()>
where
    F: TryInto<Ftype>,
    F::Error: Into<LlamaError>,
{
    let ftype: Ftype = ftype.try_into().map_err(Into::into)?;
    init();
    check_readable_file(input)?;
    let c_in = path_cstring(input)?;
    let c_out = path_cstring(output)?;

    // Keep the names alive while llama.cpp reads them; it copies the data before returning.
    let mut names: Vec<CString> = Vec::new();
    let mut table: Vec<sys::llama_model_imatrix_data> = Vec::new();
    if let Some(im) = imatrix {
        if im.is_empty() {
            return Err(LlamaError::Imatrix {
                name: String::new(),
                reason: "importance matrix has no entries".into(),
            });
        }
        for (name, values) in &im.entries {
            // insert() rejected NUL bytes.
            let c = CString::new(name.as_bytes()).map_err(|_| LlamaError::Imatrix {
                name: name.clone(),
                reason: "name contains a NUL byte".into(),
            })?;
            names.push(c);
            table.push(sys::llama_model_imatrix_data {
                name: names.last().map_or(std::ptr::null(), |c| c.as_ptr()),
                data: values.as_ptr(),
                size: values.len(),
            });
        }
        table.push(sys::llama_model_imatrix_data {
            name: std::ptr::null(),
            data: std::ptr::null(),
            size: 0,
        });
    }

    // SAFETY: default params are plain data.
    let mut params = unsafe { sys::llama_model_quantize_default_params() };
    params.nthread = i32::try_from(n_threads).unwrap_or(i32::MAX);
    params.ftype = ftype.id();
    params.allow_requantize = true;
    params.imatrix = if table.is_empty() {
        std::ptr::null()
    } else {
        table.as_ptr()
    };
    clear_last_error();
    // SAFETY: paths are NUL-terminated; the imatrix table is null-terminated and it, the names
    // (CString heap buffers do not move when the Vec grows) and the values outlive the call.
    let rc = unsafe { sys::llama_model_quantize(c_in.as_ptr(), c_out.as_ptr(), &params) };
    if rc != 0 {
        return Err(LlamaError::Quantize {
            input: input.into(),
            output: output.into(),
            detail: take_last_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftype_ids_match_llama_h() {
        assert_eq!(Ftype::Q4_0.id(), sys::LLAMA_FTYPE_MOSTLY_Q4_0);
        assert_eq!(Ftype::Q4_K_M.id(), sys::LLAMA_FTYPE_MOSTLY_Q4_K_M);
        assert_eq!(Ftype::IQ4_NL.id(), sys::LLAMA_FTYPE_MOSTLY_IQ4_NL);
        assert_eq!(Ftype::Q6_K.id(), sys::LLAMA_FTYPE_MOSTLY_Q6_K);
        assert_eq!(Ftype::Q2_0.id(), sys::LLAMA_FTYPE_MOSTLY_Q2_0);
        assert_eq!(Ftype::MXFP4_MOE.id(), sys::LLAMA_FTYPE_MOSTLY_MXFP4_MOE);
    }

    #[test]
    fn ftype_parses_names_and_numbers() {
        assert_eq!("q4_k_m".parse::<Ftype>().unwrap(), Ftype::Q4_K_M);
        assert_eq!("Q4_0".parse::<Ftype>().unwrap(), Ftype::Q4_0);
        assert_eq!("15".parse::<Ftype>().unwrap(), Ftype::Q4_K_M);
        assert!("Q4_2".parse::<Ftype>().is_err());
        assert!("4".parse::<Ftype>().is_err());
    }

    #[test]
    fn imatrix_rejects_bad_values_and_averages_sums() {
        let mut im = ImatrixData::new();
        assert!(im.insert("a", vec![1.0, f32::NAN]).is_err());
        assert!(im.insert("a", vec![-1.0]).is_err());
        assert!(im.insert("a\0b", vec![1.0]).is_err());
        im.insert_from_sums("e", &[2.0, 4.0, 9.0, 9.0], &[2.0, 0.0])
            .unwrap();
        assert_eq!(im.get("e").unwrap(), &[1.0, 2.0, 1.0, 1.0]);
        assert!(im
            .insert_from_sums("x", &[1.0, 2.0, 3.0], &[1.0, 1.0])
            .is_err());
    }

    #[test]
    fn missing_input_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.gguf");
        let err = llama_quantize(&missing, &dir.path().join("out.gguf"), Ftype::Q4_0, None, 1)
            .unwrap_err();
        assert!(err.to_string().contains("nope.gguf"), "{err}");
    }

    #[test]
    fn garbage_input_is_an_error_not_an_abort() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.gguf");
        std::fs::write(&bad, b"GGUF\x03\x00\x00\x00garbage").unwrap();
        let out = dir.path().join("out.gguf");
        let err = llama_quantize(&bad, &out, Ftype::Q4_0, None, 1).unwrap_err();
        assert!(matches!(err, LlamaError::Quantize { .. }), "{err}");
        // Names are accepted too, and unknown names fail before touching any file.
        let err = llama_quantize(&bad, &out, "Q9_X", None, 1).unwrap_err();
        assert!(matches!(err, LlamaError::UnknownFtype(_)), "{err}");
        let err = llama_quantize(&bad, &out, "q4_k_m", None, 1).unwrap_err();
        assert!(matches!(err, LlamaError::Quantize { .. }), "{err}");
    }
}
