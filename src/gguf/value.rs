//! Typed GGUF metadata values, kept losslessly: every one of the 13 GGUF value types has its own
//! variant, strings keep their raw bytes (GGUF does not promise UTF-8 for values), and arrays
//! keep their element type even when empty.

use std::fmt;

/// The GGUF value type tags, with their on-disk ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    /// Unsigned 8-bit integer.
    U8 = 0,
    /// Signed 8-bit integer.
    I8 = 1,
    /// Unsigned 16-bit integer.
    U16 = 2,
    /// Signed 16-bit integer.
    I16 = 3,
    /// Unsigned 32-bit integer.
    U32 = 4,
    /// Signed 32-bit integer.
    I32 = 5,
    /// 32-bit IEEE float.
    F32 = 6,
    /// Boolean, one byte on disk.
    Bool = 7,
    /// Length-prefixed (u64) byte string.
    String = 8,
    /// Typed array: element type (u32), count (u64), elements.
    Array = 9,
    /// Unsigned 64-bit integer.
    U64 = 10,
    /// Signed 64-bit integer.
    I64 = 11,
    /// 64-bit IEEE float.
    F64 = 12,
}

impl ValueType {
    /// The type with this on-disk id, if any.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The on-disk id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Upper-case name, as `inspect` prints it (`U32`, `STRING`, `ARRAY`).
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "U8",
            I8 => "I8",
            U16 => "U16",
            I16 => "I16",
            U32 => "U32",
            I32 => "I32",
            F32 => "F32",
            Bool => "BOOL",
            String => "STRING",
            Array => "ARRAY",
            U64 => "U64",
            I64 => "I64",
            F64 => "F64",
        }
    }

    /// Bytes one value occupies on disk, for the fixed-size types (`None` for strings and
    /// arrays).
    pub fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// The fewest bytes one value of this type can occupy on disk (a string needs at least its
    /// 8-byte length, an array its 4-byte type and 8-byte count). Used to bound claimed counts
    /// by the bytes that remain before anything is allocated.
    pub fn min_size(self) -> usize {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            t => t.fixed_size().unwrap_or(1),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// `U8` value.
    U8(u8),
    /// `I8` value.
    I8(i8),
    /// `U16` value.
    U16(u16),
    /// `I16` value.
    I16(i16),
    /// `U32` value.
    U32(u32),
    /// `I32` value.
    I32(i32),
    /// `F32` value.
    F32(f32),
    /// `BOOL` value (any non-zero byte reads as `true`, as in ggml).
    Bool(bool),
    /// `STRING` value: raw bytes, usually but not necessarily UTF-8.
    String(Vec<u8>),
    /// `ARRAY` value.
    Array(MetaArray),
    /// `U64` value.
    U64(u64),
    /// `I64` value.
    I64(i64),
    /// `F64` value.
    F64(f64),
}

/// A typed metadata array. GGUF (and ggml's loader) do not allow arrays of arrays, so there is
/// no nested variant.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaArray {
    /// Array of `U8`.
    U8(Vec<u8>),
    /// Array of `I8`.
    I8(Vec<i8>),
    /// Array of `U16`.
    U16(Vec<u16>),
    /// Array of `I16`.
    I16(Vec<i16>),
    /// Array of `U32`.
    U32(Vec<u32>),
    /// Array of `I32`.
    I32(Vec<i32>),
    /// Array of `F32`.
    F32(Vec<f32>),
    /// Array of `BOOL`.
    Bool(Vec<bool>),
    /// Array of `STRING` (raw bytes each).
    String(Vec<Vec<u8>>),
    /// Array of `U64`.
    U64(Vec<u64>),
    /// Array of `I64`.
    I64(Vec<i64>),
    /// Array of `F64`.
    F64(Vec<f64>),
}

impl MetaValue {
    /// The value's GGUF type tag.
    pub fn value_type(&self) -> ValueType {
        use MetaValue::*;
        match self {
            U8(_) => ValueType::U8,
            I8(_) => ValueType::I8,
            U16(_) => ValueType::U16,
            I16(_) => ValueType::I16,
            U32(_) => ValueType::U32,
            I32(_) => ValueType::I32,
            F32(_) => ValueType::F32,
            Bool(_) => ValueType::Bool,
            String(_) => ValueType::String,
            Array(_) => ValueType::Array,
            U64(_) => ValueType::U64,
            I64(_) => ValueType::I64,
            F64(_) => ValueType::F64,
        }
    }

    /// A `STRING` value holding `s`.
    pub fn string(s: &str) -> Self {
        MetaValue::String(s.as_bytes().to_vec())
    }

    /// The string, if this is a `STRING` holding valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value as `u64`, if it is an integer of any width and not negative.
    pub fn as_u64(&self) -> Option<u64> {
        use MetaValue::*;
        match *self {
            U8(v) => Some(v.into()),
            U16(v) => Some(v.into()),
            U32(v) => Some(v.into()),
            U64(v) => Some(v),
            I8(v) => u64::try_from(v).ok(),
            I16(v) => u64::try_from(v).ok(),
            I32(v) => u64::try_from(v).ok(),
            I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as `i64`, if it is an integer of any width that fits.
    pub fn as_i64(&self) -> Option<i64> {
        use MetaValue::*;
        match *self {
            U8(v) => Some(v.into()),
            U16(v) => Some(v.into()),
            U32(v) => Some(v.into()),
            U64(v) => i64::try_from(v).ok(),
            I8(v) => Some(v.into()),
            I16(v) => Some(v.into()),
            I32(v) => Some(v.into()),
            I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as `f64`, if it is a float or an integer (large 64-bit integers round).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            MetaValue::U64(v) => Some(v as f64),
            MetaValue::I64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value, if this is a `BOOL`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The array, if this is an `ARRAY`.
    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// JSON form for `inspect --json`: numbers as JSON numbers (non-finite floats as the
    /// strings `"NaN"`, `"inf"`, `"-inf"`), strings as JSON strings (invalid UTF-8 replaced by
    /// U+FFFD), arrays of up to [`JSON_ARRAY_LIMIT`] elements as JSON arrays, and longer arrays
    /// summarised as `{"type": "STRING", "len": 49152, "head": [first 8 elements]}`.
    /// The value's GGUF type is not part of the output; use [`MetaValue::value_type`].
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            MetaValue::U8(v) => J::from(*v),
            MetaValue::I8(v) => J::from(*v),
            MetaValue::U16(v) => J::from(*v),
            MetaValue::I16(v) => J::from(*v),
            MetaValue::U32(v) => J::from(*v),
            MetaValue::I32(v) => J::from(*v),
            MetaValue::U64(v) => J::from(*v),
            MetaValue::I64(v) => J::from(*v),
            MetaValue::F32(v) => {
                // Via the shortest decimal form, so 0.1f32 shows as 0.1, not 0.10000000149….
                float_json(v.to_string().parse::<f64>().unwrap_or(f64::from(*v)))
            }
            MetaValue::F64(v) => float_json(*v),
            MetaValue::Bool(v) => J::from(*v),
            MetaValue::String(b) => J::from(String::from_utf8_lossy(b).into_owned()),
            MetaValue::Array(a) => {
                if a.len() <= JSON_ARRAY_LIMIT {
                    J::Array((0..a.len()).map(|i| a.json_item(i)).collect())
                } else {
                    let head: Vec<J> = (0..JSON_ARRAY_HEAD).map(|i| a.json_item(i)).collect();
                    serde_json::json!({
                        "type": a.elem_type().name(),
                        "len": a.len(),
                        "head": head,
                    })
                }
            }
        }
    }
}

/// Arrays with more elements than this are summarised by [`MetaValue::to_json`].
pub const JSON_ARRAY_LIMIT: usize = 64;
/// Elements shown at the head of a summarised array.
const JSON_ARRAY_HEAD: usize = 8;
/// Elements shown by `Display` after an array's type and length.
const DISPLAY_ARRAY_HEAD: usize = 5;
/// Characters of a string shown by `Display` before it is cut.
const DISPLAY_STRING_CHARS: usize = 80;

fn float_json(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::Number::from_f64(v)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null)
    } else if v.is_nan() {
        serde_json::Value::from("NaN")
    } else if v > 0.0 {
        serde_json::Value::from("inf")
    } else {
        serde_json::Value::from("-inf")
    }
}

impl MetaArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        use MetaArray::*;
        match self {
            U8(v) => v.len(),
            I8(v) => v.len(),
            U16(v) => v.len(),
            I16(v) => v.len(),
            U32(v) => v.len(),
            I32(v) => v.len(),
            F32(v) => v.len(),
            Bool(v) => v.len(),
            String(v) => v.len(),
            U64(v) => v.len(),
            I64(v) => v.len(),
            F64(v) => v.len(),
        }
    }

    /// True if the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type (never [`ValueType::Array`]).
    pub fn elem_type(&self) -> ValueType {
        use MetaArray::*;
        match self {
            U8(_) => ValueType::U8,
            I8(_) => ValueType::I8,
            U16(_) => ValueType::U16,
            I16(_) => ValueType::I16,
            U32(_) => ValueType::U32,
            I32(_) => ValueType::I32,
            F32(_) => ValueType::F32,
            Bool(_) => ValueType::Bool,
            String(_) => ValueType::String,
            U64(_) => ValueType::U64,
            I64(_) => ValueType::I64,
            F64(_) => ValueType::F64,
        }
    }

    /// The elements as `&str`, if this is a string array whose elements are all valid UTF-8.
    pub fn strings(&self) -> Option<Vec<&str>> {
        match self {
            MetaArray::String(v) => v.iter().map(|b| std::str::from_utf8(b).ok()).collect(),
            _ => None,
        }
    }

    /// Element `i` as a scalar value (`None` past the end).
    pub fn get(&self, i: usize) -> Option<MetaValue> {
        use MetaArray as A;
        use MetaValue as V;
        Some(match self {
            A::U8(v) => V::U8(*v.get(i)?),
            A::I8(v) => V::I8(*v.get(i)?),
            A::U16(v) => V::U16(*v.get(i)?),
            A::I16(v) => V::I16(*v.get(i)?),
            A::U32(v) => V::U32(*v.get(i)?),
            A::I32(v) => V::I32(*v.get(i)?),
            A::F32(v) => V::F32(*v.get(i)?),
            A::Bool(v) => V::Bool(*v.get(i)?),
            A::String(v) => V::String(v.get(i)?.clone()),
            A::U64(v) => V::U64(*v.get(i)?),
            A::I64(v) => V::I64(*v.get(i)?),
            A::F64(v) => V::F64(*v.get(i)?),
        })
    }

    fn json_item(&self, i: usize) -> serde_json::Value {
        self.get(i)
            .map(|v| v.to_json())
            .unwrap_or(serde_json::Value::Null)
    }
}

fn write_short_string(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let s = String::from_utf8_lossy(bytes);
    let n_chars = s.chars().count();
    if n_chars <= DISPLAY_STRING_CHARS {
        write!(f, "{s:?}")
    } else {
        let cut: String = s.chars().take(DISPLAY_STRING_CHARS).collect();
        write!(f, "{cut:?}… ({n_chars} chars)")
    }
}

impl fmt::Display for MetaValue {
    /// Short human form: scalars as numbers, strings quoted (long ones cut), arrays as
    /// `[STRING × 49152] ["a", "b", …]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
            MetaValue::F32(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::String(b) => write_short_string(f, b),
            MetaValue::Array(a) => {
                write!(f, "[{} × {}]", a.elem_type(), a.len())?;
                if a.is_empty() {
                    return Ok(());
                }
                f.write_str(" [")?;
                for i in 0..a.len().min(DISPLAY_ARRAY_HEAD) {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if let Some(item) = a.get(i) {
                        write!(f, "{item}")?;
                    }
                }
                if a.len() > DISPLAY_ARRAY_HEAD {
                    f.write_str(", …")?;
                }
                f.write_str("]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids_round_trip() {
        for id in 0..13 {
            let t = ValueType::from_id(id).unwrap();
            assert_eq!(t.id(), id);
        }
        assert_eq!(ValueType::from_id(13), None);
        assert_eq!(ValueType::from_id(u32::MAX), None);
    }

    #[test]
    fn accessors() {
        assert_eq!(MetaValue::U8(7).as_u64(), Some(7));
        assert_eq!(MetaValue::I32(-1).as_u64(), None);
        assert_eq!(MetaValue::I64(-5).as_i64(), Some(-5));
        assert_eq!(MetaValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(MetaValue::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(MetaValue::F32(1.5).as_u64(), None);
        assert_eq!(MetaValue::F32(1.5).as_f64(), Some(1.5));
        assert_eq!(MetaValue::U16(3).as_f64(), Some(3.0));
        assert_eq!(MetaValue::Bool(true).as_bool(), Some(true));
        assert_eq!(MetaValue::U8(1).as_bool(), None);
        assert_eq!(MetaValue::string("héllo").as_str(), Some("héllo"));
        assert_eq!(MetaValue::String(vec![0xff, 0xfe]).as_str(), None);
        let a = MetaValue::Array(MetaArray::String(vec![b"a".to_vec(), b"bc".to_vec()]));
        assert_eq!(a.as_array().unwrap().strings(), Some(vec!["a", "bc"]));
        assert_eq!(a.as_array().unwrap().elem_type(), ValueType::String);
        let bad = MetaArray::String(vec![b"a".to_vec(), vec![0xc3]]);
        assert_eq!(bad.strings(), None);
        assert_eq!(MetaArray::U32(vec![1]).strings(), None);
        assert!(MetaArray::F64(vec![]).is_empty());
    }

    #[test]
    fn display_is_short() {
        let tokens: Vec<Vec<u8>> = (0..49152).map(|i| format!("t{i}").into_bytes()).collect();
        let v = MetaValue::Array(MetaArray::String(tokens));
        assert_eq!(
            v.to_string(),
            "[STRING × 49152] [\"t0\", \"t1\", \"t2\", \"t3\", \"t4\", …]"
        );
        assert_eq!(
            MetaValue::Array(MetaArray::I32(vec![])).to_string(),
            "[I32 × 0]"
        );
        assert_eq!(
            MetaValue::Array(MetaArray::I8(vec![1, -2])).to_string(),
            "[I8 × 2] [1, -2]"
        );
        let long = MetaValue::string(&"x".repeat(1000));
        let shown = long.to_string();
        assert!(
            shown.len() < 120 && shown.ends_with("(1000 chars)"),
            "{shown}"
        );
        assert_eq!(MetaValue::F32(0.5).to_string(), "0.5");
    }

    #[test]
    fn json_summarises_long_arrays() {
        let v = MetaValue::Array(MetaArray::U32((0..1000).collect()));
        let j = v.to_json();
        assert_eq!(j["type"], "U32");
        assert_eq!(j["len"], 1000);
        assert_eq!(j["head"].as_array().unwrap().len(), 8);
        assert_eq!(j["head"][7], 7);
        let short = MetaValue::Array(MetaArray::Bool(vec![true, false])).to_json();
        assert_eq!(short, serde_json::json!([true, false]));
        assert_eq!(MetaValue::F32(f32::NAN).to_json(), "NaN");
        assert_eq!(MetaValue::F64(f64::NEG_INFINITY).to_json(), "-inf");
        assert_eq!(MetaValue::string("a").to_json(), "a");
        assert_eq!(MetaValue::I64(-3).to_json(), -3);
        assert_eq!(MetaValue::F32(0.1).to_json(), 0.1);
        assert_eq!(MetaValue::F32(1e-5).to_json(), 1e-5);
    }
}
