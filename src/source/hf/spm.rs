//! SentencePiece vocabularies (Llama 2, Mistral v0.1–v0.3, TinyLlama, CodeLlama) as llama.cpp's
//! `llama` tokenizer: tokens, scores and token types, with no merges (llama.cpp's SPM tokenizer
//! merges by score).
//!
//! Two sources, as in llama.cpp's converter:
//! - `tokenizer.model`, the sentencepiece `ModelProto`, read by a small bounds-checked protobuf
//!   reader ([`SpmModel::parse`]): pieces with their scores and types are taken as they are;
//!   `added_tokens.json` and `tokenizer_config.json` `added_tokens_decoder` then override ids
//!   (score −1000, CONTROL when special or special-looking, else USER_DEFINED), and ids up to
//!   `vocab_size` that nothing names become `[PAD{id}]`, score −10000, UNUSED.
//! - without it, a `tokenizer.json` BPE model with `byte_fallback: true`. llama.cpp's converter
//!   writes −1000 as every score there, which makes its SPM tokenizer merge left to right; we
//!   derive the scores from the merge order instead (a piece scores by the first merge that
//!   makes it, counted in pieces: the k-th piece made scores −(k + 1), which is the sentencepiece
//!   BPE convention), so llama.cpp merges in the order the Hugging Face tokenizer does. Byte pieces
//!   (`<0xNN>`) are BYTE, the `unk_token` UNKNOWN, special tokens CONTROL, added non-special
//!   tokens USER_DEFINED.

use super::tokenizer::{looks_special, token_type};
use super::{Config, HfError};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Largest `tokenizer.model` read (Gemma's, among the largest, is 4 MB).
pub const MAX_MODEL_BYTES: u64 = 256 << 20;

/// sentencepiece `ModelProto.SentencePiece.Type` values (the same numbers as llama.cpp's token
/// types).
pub mod piece_type {
    /// Ordinary piece.
    pub const NORMAL: i32 = 1;
    /// The unknown piece.
    pub const UNKNOWN: i32 = 2;
    /// Control symbol (`<s>`, `</s>`).
    pub const CONTROL: i32 = 3;
    /// User-defined symbol.
    pub const USER_DEFINED: i32 = 4;
    /// Unused piece.
    pub const UNUSED: i32 = 5;
    /// Byte-fallback piece `<0xNN>`.
    pub const BYTE: i32 = 6;
}

/// One piece of a sentencepiece model.
#[derive(Clone, Debug, PartialEq)]
pub struct SpmPiece {
    /// The piece text (`▁` marks a space).
    pub piece: String,
    /// Its score (log probability for Unigram, −merge order for BPE).
    pub score: f32,
    /// Its type, one of [`piece_type`].
    pub kind: i32,
}

/// The fields of a sentencepiece `ModelProto` the conversion needs.
#[derive(Clone, Debug, PartialEq)]
pub struct SpmModel {
    /// The pieces, in id order.
    pub pieces: Vec<SpmPiece>,
    /// `trainer_spec.model_type` (1 Unigram, 2 BPE, 3 word, 4 char), if there is a trainer spec.
    pub model_type: Option<i32>,
    /// `trainer_spec.byte_fallback`.
    pub byte_fallback: bool,
    /// `normalizer_spec.add_dummy_prefix` (true when absent).
    pub add_dummy_prefix: bool,
    /// `normalizer_spec.remove_extra_whitespaces` (true when absent).
    pub remove_extra_whitespaces: bool,
    /// `trainer_spec.treat_whitespace_as_suffix`.
    pub treat_whitespace_as_suffix: bool,
}

/// sentencepiece `TrainerSpec.ModelType` names.
fn model_type_name(t: i32) -> &'static str {
    match t {
        1 => "UNIGRAM",
        2 => "BPE",
        3 => "WORD",
        4 => "CHAR",
        _ => "unknown",
    }
}

/// A protobuf wire-format reader over a byte slice; every read is bounds-checked and errors
/// name the field being read and its byte offset in the file.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the file.
    base: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, field: &str, message: impl Into<String>) -> HfError {
        HfError::Protobuf {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            offset: (self.base + self.pos) as u64,
            message: message.into(),
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self, field: &str) -> Result<u64, HfError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err(field, "varint runs past the end of its message"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(self.err(field, "varint longer than 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(field, "varint longer than 10 bytes"))
    }

    /// The next field number and wire type.
    fn key(&mut self, message: &str) -> Result<(u64, u8), HfError> {
        let k = self.varint(message)?;
        let (field, wire) = (k >> 3, (k & 7) as u8);
        if field == 0 {
            return Err(self.err(message, "field number 0"));
        }
        Ok((field, wire))
    }

    fn take(&mut self, field: &str, n: u64) -> Result<Reader<'a>, HfError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(
                field,
                format!("length {n} runs past the end of its message ({left} bytes left)"),
            ));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(Reader {
            buf: &self.buf[start..self.pos],
            pos: 0,
            base: self.base + start,
            path: self.path,
        })
    }

    /// A length-delimited field (wire type 2).
    fn delimited(&mut self, field: &str, wire: u8) -> Result<Reader<'a>, HfError> {
        if wire != 2 {
            return Err(self.err(field, format!("wire type {wire}, expected 2 (bytes)")));
        }
        let n = self.varint(field)?;
        self.take(field, n)
    }

    fn string(&mut self, field: &str, wire: u8) -> Result<String, HfError> {
        let r = self.delimited(field, wire)?;
        String::from_utf8(r.buf.to_vec()).map_err(|_| self.err(field, "not valid UTF-8"))
    }

    fn fixed32(&mut self, field: &str, wire: u8) -> Result<u32, HfError> {
        if wire != 5 {
            return Err(self.err(field, format!("wire type {wire}, expected 5 (32-bit)")));
        }
        let r = self.take(field, 4)?;
        Ok(u32::from_le_bytes([r.buf[0], r.buf[1], r.buf[2], r.buf[3]]))
    }

    fn int(&mut self, field: &str, wire: u8) -> Result<i64, HfError> {
        if wire != 0 {
            return Err(self.err(field, format!("wire type {wire}, expected 0 (varint)")));
        }
        Ok(self.varint(field)? as i64)
    }

    fn boolean(&mut self, field: &str, wire: u8) -> Result<bool, HfError> {
        Ok(self.int(field, wire)? != 0)
    }

    /// Skip a field of an unneeded number.
    fn skip(&mut self, message: &str, number: u64, wire: u8) -> Result<(), HfError> {
        let field = format!("{message} field {number}");
        match wire {
            0 => self.varint(&field).map(|_| ()),
            1 => self.take(&field, 8).map(|_| ()),
            2 => self.delimited(&field, wire).map(|_| ()),
            5 => self.take(&field, 4).map(|_| ()),
            w => Err(self.err(&field, format!("unsupported wire type {w}"))),
        }
    }
}

impl SpmModel {
    /// Read `tokenizer.model` (size-capped at [`MAX_MODEL_BYTES`]).
    pub fn load(path: &Path) -> Result<SpmModel, HfError> {
        let io = |source| HfError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_MODEL_BYTES {
            return Err(HfError::Protobuf {
                path: path.to_path_buf(),
                field: "ModelProto".into(),
                offset: 0,
                message: format!("{len} bytes is larger than the {MAX_MODEL_BYTES}-byte cap"),
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::parse(&bytes, path)
    }

    /// Parse a serialised sentencepiece `ModelProto`; `path` names the file in errors. Never
    /// panics: malformed input (truncated fields, bad wire types, unknown piece types, invalid
    /// UTF-8, non-finite scores, no pieces) is an error naming the field and byte offset.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<SpmModel, HfError> {
        let mut r = Reader {
            buf: bytes,
            pos: 0,
            base: 0,
            path,
        };
        let mut m = SpmModel {
            pieces: Vec::new(),
            model_type: None,
            byte_fallback: false,
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            treat_whitespace_as_suffix: false,
        };
        while !r.done() {
            let (num, wire) = r.key("ModelProto")?;
            match num {
                1 => {
                    let field = format!("pieces[{}]", m.pieces.len());
                    let mut p = r.delimited(&field, wire)?;
                    m.pieces.push(parse_piece(&mut p, &field)?);
                }
                2 => {
                    let mut t = r.delimited("trainer_spec", wire)?;
                    // proto2 default: UNIGRAM.
                    m.model_type = Some(1);
                    while !t.done() {
                        let (num, wire) = t.key("trainer_spec")?;
                        match num {
                            3 => {
                                m.model_type = Some(t.int("trainer_spec.model_type", wire)? as i32)
                            }
                            24 => {
                                m.treat_whitespace_as_suffix =
                                    t.boolean("trainer_spec.treat_whitespace_as_suffix", wire)?
                            }
                            35 => {
                                m.byte_fallback = t.boolean("trainer_spec.byte_fallback", wire)?
                            }
                            n => t.skip("trainer_spec", n, wire)?,
                        }
                    }
                }
                3 => {
                    let mut n = r.delimited("normalizer_spec", wire)?;
                    while !n.done() {
                        let (num, wire) = n.key("normalizer_spec")?;
                        match num {
                            3 => {
                                m.add_dummy_prefix =
                                    n.boolean("normalizer_spec.add_dummy_prefix", wire)?
                            }
                            4 => {
                                m.remove_extra_whitespaces =
                                    n.boolean("normalizer_spec.remove_extra_whitespaces", wire)?
                            }
                            k => n.skip("normalizer_spec", k, wire)?,
                        }
                    }
                }
                n => r.skip("ModelProto", n, wire)?,
            }
        }
        if m.pieces.is_empty() {
            return Err(HfError::Protobuf {
                path: path.to_path_buf(),
                field: "pieces".into(),
                offset: bytes.len() as u64,
                message: "no pieces: not a sentencepiece model".into(),
            });
        }
        Ok(m)
    }
}

fn parse_piece(p: &mut Reader<'_>, field: &str) -> Result<SpmPiece, HfError> {
    let mut piece = None;
    let mut score = 0f32;
    let mut kind = piece_type::NORMAL;
    while !p.done() {
        let (num, wire) = p.key(field)?;
        match num {
            1 => piece = Some(p.string(&format!("{field}.piece"), wire)?),
            2 => {
                let f = format!("{field}.score");
                let at = p.pos;
                score = f32::from_bits(p.fixed32(&f, wire)?);
                if !score.is_finite() {
                    p.pos = at;
                    return Err(p.err(&f, format!("{score} is not finite")));
                }
            }
            3 => {
                let f = format!("{field}.type");
                let at = p.pos;
                let t = p.int(&f, wire)?;
                if !(1..=6).contains(&t) {
                    p.pos = at;
                    return Err(p.err(&f, format!("{t} is not a piece type (1..=6)")));
                }
                kind = t as i32;
            }
            n => p.skip(field, n, wire)?,
        }
    }
    let piece = piece.ok_or_else(|| p.err(&format!("{field}.piece"), "missing"))?;
    Ok(SpmPiece { piece, score, kind })
}

/// A SentencePiece vocabulary in llama.cpp's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct SpmVocab {
    /// Token texts, by id.
    pub tokens: Vec<Vec<u8>>,
    /// Scores, by id.
    pub scores: Vec<f32>,
    /// llama.cpp token types, by id.
    pub types: Vec<i32>,
    /// Content → id of every control, unknown and added token (for special token lookups).
    pub specials: HashMap<String, u64>,
    /// `tokenizer.ggml.add_space_prefix` when it must be written.
    pub add_space_prefix: Option<bool>,
}

fn read_json_optional(path: &Path) -> Result<Option<Config>, HfError> {
    if path.is_file() {
        Config::load(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The vocabulary size to write: `config.json` `vocab_size`, else `natural`.
fn vocab_size(config: &Config, natural: u64) -> Result<u64, HfError> {
    let n = config.opt_u64("vocab_size")?.unwrap_or(natural);
    if n == 0 || n > (1 << 24) {
        return Err(config.field_err("vocab_size", format!("{n} is out of range")));
    }
    Ok(n)
}

/// `tokenizer_config.json` `add_prefix_space`, which llama.cpp's converter writes as
/// `add_space_prefix` when present.
fn config_prefix(tcfg: Option<&Config>) -> Option<bool> {
    tcfg?.json.get("add_prefix_space").and_then(Value::as_bool)
}

/// Apply `added_tokens.json` and `tokenizer_config.json` `added_tokens_decoder` as llama.cpp's
/// converter does.
fn apply_added(
    dir: &Path,
    tcfg: Option<&Config>,
    v: &mut SpmVocab,
    overridden: &mut Vec<u64>,
) -> Result<(), HfError> {
    let n = v.tokens.len() as u64;
    if let Some(added) = read_json_optional(&dir.join("added_tokens.json"))? {
        for (content, id) in &added.json {
            let id = id.as_u64().ok_or_else(|| {
                added.field_err(content, "id is not a non-negative integer".into())
            })?;
            if id >= n {
                continue;
            }
            let i = id as usize;
            v.tokens[i] = content.as_bytes().to_vec();
            v.scores[i] = -1000.0;
            v.types[i] = token_type::USER_DEFINED;
            v.specials.insert(content.clone(), id);
            overridden.push(id);
        }
    }
    let Some(tcfg) = tcfg else { return Ok(()) };
    let Some(decoder) = tcfg
        .json
        .get("added_tokens_decoder")
        .filter(|d| !d.is_null())
    else {
        return Ok(());
    };
    let decoder = decoder
        .as_object()
        .ok_or_else(|| tcfg.field_err("added_tokens_decoder", "is not an object".into()))?;
    for (key, entry) in decoder {
        let field = format!("added_tokens_decoder.{key}");
        let id: u64 = key
            .parse()
            .map_err(|_| tcfg.field_err(&field, "key is not a token id".into()))?;
        let content = entry
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| tcfg.field_err(&field, "'content' missing or not a string".into()))?;
        if id >= n {
            continue;
        }
        let i = id as usize;
        let special = entry.get("special").and_then(Value::as_bool) == Some(true);
        let text = if special || looks_special(content) {
            v.types[i] = token_type::CONTROL;
            content.to_string()
        } else {
            v.types[i] = token_type::USER_DEFINED;
            // User-defined pieces are matched before the space escaping: pre-normalise.
            content.replace('\u{2581}', " ")
        };
        v.scores[i] = -1000.0;
        v.tokens[i] = text.into_bytes();
        v.specials.insert(content.to_string(), id);
        overridden.push(id);
    }
    Ok(())
}

/// The vocabulary from `tokenizer.model` (plus added tokens and padding, see the module docs).
pub fn from_model_proto(
    path: &Path,
    dir: &Path,
    config: &Config,
    tcfg: Option<&Config>,
) -> Result<SpmVocab, HfError> {
    let model = SpmModel::load(path)?;
    if let Some(t) = model.model_type.filter(|&t| t != 2) {
        return Err(HfError::Protobuf {
            path: path.to_path_buf(),
            field: "trainer_spec.model_type".into(),
            offset: 0,
            message: format!(
                "{} ({t}) is not supported: llama.cpp's llama tokenizer needs a BPE sentencepiece model",
                model_type_name(t)
            ),
        });
    }
    let n = vocab_size(config, model.pieces.len() as u64)? as usize;
    let mut v = SpmVocab {
        tokens: (0..n).map(|i| format!("[PAD{i}]").into_bytes()).collect(),
        scores: vec![-10000.0; n],
        types: vec![token_type::UNUSED; n],
        specials: HashMap::new(),
        add_space_prefix: None,
    };
    for (i, p) in model.pieces.iter().enumerate().take(n) {
        v.tokens[i] = p.piece.as_bytes().to_vec();
        v.scores[i] = p.score;
        // As llama.cpp's converter: user-defined pieces of the model stay NORMAL.
        v.types[i] = match p.kind {
            piece_type::UNKNOWN | piece_type::CONTROL | piece_type::UNUSED | piece_type::BYTE => {
                p.kind
            }
            _ => token_type::NORMAL,
        };
        if matches!(p.kind, piece_type::UNKNOWN | piece_type::CONTROL) {
            v.specials.entry(p.piece.clone()).or_insert(i as u64);
        }
    }
    apply_added(dir, tcfg, &mut v, &mut Vec::new())?;
    // llama.cpp adds a space prefix to SPM text unless told not to; say so when the model does
    // not want it (llama.cpp's converter only reads tokenizer_config.json here).
    v.add_space_prefix = config_prefix(tcfg).or((!model.add_dummy_prefix).then_some(false));
    Ok(v)
}

fn ty(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Whether a `Metaspace` pre-tokenizer (or normalizer `Prepend("▁")`) adds the dummy prefix.
fn json_adds_prefix(tok: &Config) -> Result<bool, HfError> {
    let mut prefix = false;
    let norm = tok.json.get("normalizer").cloned().unwrap_or(Value::Null);
    let norms: Vec<&Value> = match ty(&norm) {
        "Sequence" => norm
            .get("normalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        "" => vec![],
        _ => vec![&norm],
    };
    for n in norms {
        if ty(n) == "Prepend" && n.get("prepend").and_then(Value::as_str) == Some("\u{2581}") {
            prefix = true;
        }
    }
    let pre = tok
        .json
        .get("pre_tokenizer")
        .cloned()
        .unwrap_or(Value::Null);
    let pres: Vec<&Value> = match ty(&pre) {
        "Sequence" => pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ if pre.is_null() => vec![],
        _ => vec![&pre],
    };
    for p in pres {
        if ty(p) != "Metaspace" {
            return Err(HfError::UnknownPreTokenizer {
                path: tok.path.clone(),
                summary: p.to_string().chars().take(80).collect(),
                known:
                    "a SentencePiece-style (byte_fallback) BPE takes no pre-tokenizer or Metaspace"
                        .into(),
            });
        }
        prefix |= match p.get("prepend_scheme").and_then(Value::as_str) {
            Some(s) => s != "never",
            None => p
                .get("add_prefix_space")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        };
    }
    Ok(prefix)
}

/// Whether `t` is a byte-fallback piece `<0xNN>`.
pub fn is_byte_piece(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && b.starts_with(b"<0x")
        && b[5] == b'>'
        && b[3].is_ascii_hexdigit()
        && b[4].is_ascii_hexdigit()
}

/// The vocabulary from a `byte_fallback` BPE `tokenizer.json` (no `tokenizer.model`).
pub fn from_tokenizer_json(
    tok: &Config,
    config: &Config,
    tcfg: Option<&Config>,
) -> Result<SpmVocab, HfError> {
    let model = tok
        .json
        .get("model")
        .and_then(Value::as_object)
        .ok_or_else(|| tok.field_err("model", "missing or not an object".into()))?;
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| tok.field_err("model.vocab", "missing or not an object".into()))?;
    let mut by_id: HashMap<u64, &str> = HashMap::with_capacity(vocab.len());
    for (t, id) in vocab {
        let id = id.as_u64().ok_or_else(|| {
            tok.field_err(
                &format!("model.vocab '{t}'"),
                "id is not a non-negative integer".into(),
            )
        })?;
        if let Some(other) = by_id.insert(id, t) {
            return Err(tok.field_err(
                "model.vocab",
                format!("id {id} is used by both '{other}' and '{t}'"),
            ));
        }
    }
    let base = by_id.keys().copied().max().map_or(0, |m| m + 1);

    // Special tokens: flagged in added_tokens or named by tokenizer_config.json.
    let mut special: HashMap<String, bool> = HashMap::new();
    let mut added: Vec<(u64, String, bool)> = Vec::new();
    match tok.json.get("added_tokens") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, e) in a.iter().enumerate() {
                let field = format!("added_tokens[{i}]");
                let id = e.get("id").and_then(Value::as_u64).ok_or_else(|| {
                    tok.field_err(&field, "'id' missing or not an integer".into())
                })?;
                let content = e.get("content").and_then(Value::as_str).ok_or_else(|| {
                    tok.field_err(&field, "'content' missing or not a string".into())
                })?;
                let sp = e.get("special").and_then(Value::as_bool).unwrap_or(false);
                if sp {
                    special.insert(content.to_string(), true);
                }
                added.push((id, content.to_string(), sp));
            }
        }
        Some(_) => return Err(tok.field_err("added_tokens", "is not a list".into())),
    }
    if let Some(c) = tcfg {
        for typ in ["bos", "eos", "unk", "sep", "pad", "cls", "mask"] {
            match c.json.get(&format!("{typ}_token")) {
                Some(Value::String(s)) => {
                    special.insert(s.clone(), true);
                }
                Some(Value::Object(o)) => {
                    if let Some(s) = o.get("content").and_then(Value::as_str) {
                        special.insert(s.to_string(), true);
                    }
                }
                _ => {}
            }
        }
        if let Some(Value::Array(a)) = c.json.get("additional_special_tokens") {
            for s in a {
                let s = s
                    .as_str()
                    .or_else(|| s.get("content").and_then(Value::as_str));
                if let Some(s) = s {
                    special.insert(s.to_string(), true);
                }
            }
        }
    }
    let unk = model.get("unk_token").and_then(Value::as_str);

    // Pieces in the order merges first make them: the k-th (from 0) scores −(k + 1), as a
    // sentencepiece BPE model scores its pieces by merge order.
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| tok.field_err("model.merges", "missing or not a list".into()))?;
    let mut rank: HashMap<String, usize> = HashMap::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let piece = match m {
            Value::String(s) => match s.split_once(' ') {
                Some((a, b)) => format!("{a}{b}"),
                None => {
                    return Err(tok.field_err(
                        &format!("model.merges[{i}]"),
                        "is not two pieces separated by a space".into(),
                    ))
                }
            },
            Value::Array(p) if p.len() == 2 && p.iter().all(Value::is_string) => {
                format!(
                    "{}{}",
                    p[0].as_str().unwrap_or_default(),
                    p[1].as_str().unwrap_or_default()
                )
            }
            _ => {
                return Err(tok.field_err(
                    &format!("model.merges[{i}]"),
                    "is neither a string nor a pair of strings".into(),
                ))
            }
        };
        let next = rank.len();
        rank.entry(piece).or_insert(next);
    }

    let n = vocab_size(
        config,
        base.max(added.iter().map(|a| a.0 + 1).max().unwrap_or(0)),
    )?;
    let n_made = rank.len() as f32;
    let mut v = SpmVocab {
        tokens: Vec::with_capacity(n as usize),
        scores: Vec::with_capacity(n as usize),
        types: Vec::with_capacity(n as usize),
        specials: HashMap::new(),
        add_space_prefix: None,
    };
    for id in 0..n {
        let Some(&t) = by_id.get(&id) else {
            v.tokens.push(format!("[PAD{id}]").into_bytes());
            v.scores.push(-10000.0);
            v.types.push(token_type::UNUSED);
            continue;
        };
        let (score, kind) = if is_byte_piece(t) {
            (0.0, token_type::BYTE)
        } else if Some(t) == unk {
            (0.0, token_type::UNKNOWN)
        } else if special.contains_key(t) {
            (0.0, token_type::CONTROL)
        } else {
            let s = match rank.get(t) {
                Some(&k) => -(k as f32 + 1.0),
                // No merge makes it (single characters): below every merged piece.
                None => -(n_made + 1.0 + id as f32),
            };
            (s, token_type::NORMAL)
        };
        if matches!(kind, token_type::CONTROL | token_type::UNKNOWN) {
            v.specials.insert(t.to_string(), id);
        }
        v.tokens.push(t.as_bytes().to_vec());
        v.scores.push(score);
        v.types.push(kind);
    }
    // Added tokens: their ids take their content; beyond the base vocabulary they are
    // USER_DEFINED unless special.
    for (id, content, sp) in &added {
        if *id >= n {
            continue;
        }
        let i = *id as usize;
        v.specials.insert(content.clone(), *id);
        if *id < base && by_id.get(id) == Some(&content.as_str()) {
            continue;
        }
        v.tokens[i] = content.as_bytes().to_vec();
        v.scores[i] = -1000.0;
        v.types[i] = if *sp || looks_special(content) || special.contains_key(content) {
            token_type::CONTROL
        } else {
            token_type::USER_DEFINED
        };
    }
    let derived = json_adds_prefix(tok)?;
    v.add_space_prefix = config_prefix(tcfg).or((!derived).then_some(false));
    Ok(v)
}

/// `tokenizer.model` in `dir`, if there is one.
pub fn model_path(dir: &Path) -> Option<PathBuf> {
    let p = dir.join("tokenizer.model");
    p.is_file().then_some(p)
}
