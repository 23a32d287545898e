//! The tokenizer as llama.cpp's `tokenizer.*` GGUF metadata, from `tokenizer.json` (byte-level
//! BPE: vocabulary, merges, added tokens, pre-tokenizer), or for SentencePiece vocabularies
//! (Llama 2, Mistral) `tokenizer.model` or a `byte_fallback` BPE `tokenizer.json` (see
//! [`super::spm`]); plus `tokenizer_config.json` (special tokens, add-BOS/EOS flags, chat
//! template) and `config.json` (fallback special token ids, vocabulary size).

use super::arch::Arch;
use super::spm::{self, SpmVocab};
use super::{Config, HfError};
use crate::gguf::{MetaArray, MetaValue};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// llama.cpp token types.
pub mod token_type {
    /// Ordinary vocabulary entry.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// Special (control) token.
    pub const CONTROL: i32 = 3;
    /// Added, non-special token.
    pub const USER_DEFINED: i32 = 4;
    /// Placeholder for an id the tokenizer does not use.
    pub const UNUSED: i32 = 5;
    /// A byte-fallback token `<0xNN>`.
    pub const BYTE: i32 = 6;
}

/// A byte-level BPE pre-tokenizer regex of tokenizer.json and the name llama.cpp knows it by.
const SPLIT_REGEXES: &[(&str, &str)] = &[
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "llama-bpe",
    ),
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "qwen2",
    ),
];

fn ty(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}

fn is_byte_level(v: &Value, use_regex: bool) -> bool {
    ty(v) == "ByteLevel"
        && !v
            .get("add_prefix_space")
            .and_then(Value::as_bool)
            .unwrap_or(true)
        && v.get("use_regex").and_then(Value::as_bool).unwrap_or(true) == use_regex
}

fn summarize(v: &Value) -> String {
    match ty(v) {
        "Sequence" => {
            let parts: Vec<String> = v
                .get("pretokenizers")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(summarize).collect())
                .unwrap_or_default();
            format!("Sequence[{}]", parts.join(", "))
        }
        "Split" => {
            let pat = v.get("pattern").map(|p| p.to_string()).unwrap_or_default();
            let pat: String = pat.chars().take(80).collect();
            format!("Split({pat})")
        }
        "" => v.to_string().chars().take(80).collect(),
        t => t.to_string(),
    }
}

/// The llama.cpp pre-tokenizer name for a tokenizer.json `pre_tokenizer` (recognised by its
/// structure and regex, not by a hash of a reference tokenisation).
pub fn pre_tokenizer_name(pre: &Value, arch: &Arch, path: &Path) -> Result<&'static str, HfError> {
    let parts: Vec<&Value> = match ty(pre) {
        "Sequence" => pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => vec![pre],
    };
    let found = match parts.as_slice() {
        [split, bl] if ty(split) == "Split" && is_byte_level(bl, false) => {
            let regex = split
                .get("pattern")
                .and_then(|p| p.get("Regex"))
                .and_then(Value::as_str);
            let isolated = split.get("behavior").and_then(Value::as_str) == Some("Isolated")
                && !split
                    .get("invert")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            regex
                .filter(|_| isolated)
                .and_then(|r| SPLIT_REGEXES.iter().find(|(re, _)| *re == r))
                .map(|(_, n)| *n)
        }
        // Digits split one by one, then GPT-2's byte-level regex: SmolLM's tokenizer (llama.cpp
        // calls the same layout "starcoder" for StarCoder models, which are not llama-arch).
        [digits, bl]
            if ty(digits) == "Digits"
                && digits.get("individual_digits").and_then(Value::as_bool) == Some(true)
                && is_byte_level(bl, true)
                && arch.gguf == "llama" =>
        {
            Some("smollm")
        }
        [bl] if is_byte_level(bl, true) => Some("gpt-2"),
        _ => None,
    };
    found.ok_or_else(|| HfError::UnknownPreTokenizer {
        path: path.to_path_buf(),
        summary: summarize(pre),
        known: "Split(Llama 3 regex)+ByteLevel → llama-bpe, Split(Qwen2 regex)+ByteLevel → qwen2, Digits+ByteLevel → smollm, ByteLevel → gpt-2".into(),
    })
}

/// Whether an added token looks like a control token even when not flagged special (llama.cpp's
/// converter's list).
pub fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

fn read_optional(path: &Path) -> Result<Option<Config>, HfError> {
    if path.is_file() {
        Config::load(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Build the `tokenizer.*` metadata from the files in `dir` and `config.json`.
///
/// `tokenizer.json` with a byte-level BPE model gives llama.cpp's `gpt2` tokenizer; a
/// `byte_fallback` BPE one (or no `tokenizer.json`) gives its SentencePiece `llama` tokenizer,
/// from `tokenizer.model` when present. Any other model type is an error naming the file.
pub fn tokenizer_metadata(
    dir: &Path,
    config: &Config,
    arch: &Arch,
) -> Result<Vec<(String, MetaValue)>, HfError> {
    let tok_path = dir.join("tokenizer.json");
    let spm_path = spm::model_path(dir);
    let tcfg = read_optional(&dir.join("tokenizer_config.json"))?;
    if !tok_path.is_file() {
        return match spm_path {
            Some(p) => {
                let v = spm::from_model_proto(&p, dir, config, tcfg.as_ref())?;
                spm_metadata(v, None, tcfg.as_ref(), config, dir)
            }
            None => Err(HfError::Io {
                path: tok_path,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "tokenizer.json (or a sentencepiece tokenizer.model) is required: llama.cpp needs the vocabulary",
                ),
            }),
        };
    }
    let tok = Config::load(&tok_path)?;
    let model = tok
        .json
        .get("model")
        .and_then(Value::as_object)
        .ok_or_else(|| tok.field_err("model", "missing or not an object".into()))?;
    let model_type = model.get("type").and_then(Value::as_str).unwrap_or("");
    if model_type != "BPE" {
        let what = if model_type.is_empty() {
            "missing".to_string()
        } else {
            format!("'{model_type}'")
        };
        return Err(tok.field_err(
            "model.type",
            format!("{what} is not supported: byte-level BPE (GPT-2, Llama 3, Qwen2) and SentencePiece-style BPE (Llama 2, Mistral) are"),
        ));
    }
    if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) {
        let v = match spm_path {
            Some(p) => spm::from_model_proto(&p, dir, config, tcfg.as_ref())?,
            None => spm::from_tokenizer_json(&tok, config, tcfg.as_ref())?,
        };
        return spm_metadata(v, Some(&tok), tcfg.as_ref(), config, dir);
    }
    let pre = tok
        .json
        .get("pre_tokenizer")
        .cloned()
        .unwrap_or(Value::Null);
    let pre_name = pre_tokenizer_name(&pre, arch, &tok.path)?;

    // id → token, from the vocabulary and the added tokens.
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| tok.field_err("model.vocab", "missing or not an object".into()))?;
    let mut by_id: HashMap<u64, (&str, i32)> = HashMap::with_capacity(vocab.len());
    for (t, id) in vocab {
        let id = id.as_u64().ok_or_else(|| {
            tok.field_err(
                &format!("model.vocab '{t}'"),
                "id is not a non-negative integer".into(),
            )
        })?;
        if let Some((other, _)) = by_id.insert(id, (t, token_type::NORMAL)) {
            return Err(tok.field_err(
                "model.vocab",
                format!("id {id} is used by both '{other}' and '{t}'"),
            ));
        }
    }
    let added = match tok.json.get("added_tokens") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(tok.field_err("added_tokens", "is not a list".into())),
    };
    let mut added_ids: HashMap<&str, u64> = HashMap::new();
    for (i, a) in added.iter().enumerate() {
        let field = format!("added_tokens[{i}]");
        let id = a
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| tok.field_err(&field, "'id' missing or not an integer".into()))?;
        let content = a
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| tok.field_err(&field, "'content' missing or not a string".into()))?;
        let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
        let tt = if special || looks_special(content) {
            token_type::CONTROL
        } else {
            token_type::USER_DEFINED
        };
        by_id.insert(id, (content, tt));
        added_ids.entry(content).or_insert(id);
    }
    let max_id = by_id.keys().copied().max().unwrap_or(0);
    let n_vocab = match config.opt_u64("vocab_size")? {
        Some(n) if n > max_id => n,
        Some(n) => {
            return Err(config.field_err(
                "vocab_size",
                format!("{n} but {} uses id {max_id}", tok.path.display()),
            ))
        }
        None => max_id + 1,
    };
    if n_vocab > (1 << 24) {
        return Err(config.field_err("vocab_size", format!("{n_vocab} is implausibly large")));
    }
    let mut tokens = Vec::with_capacity(n_vocab as usize);
    let mut types = Vec::with_capacity(n_vocab as usize);
    for id in 0..n_vocab {
        match by_id.get(&id) {
            Some((t, tt)) => {
                tokens.push(t.as_bytes().to_vec());
                types.push(*tt);
            }
            None => {
                tokens.push(format!("[PAD{id}]").into_bytes());
                types.push(token_type::UNUSED);
            }
        }
    }

    // Merges: "a b" strings, or [a, b] pairs whose spaces are written as U+0120 ('Ġ').
    let merges_v = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| tok.field_err("model.merges", "missing or not a list".into()))?;
    let mut merges = Vec::with_capacity(merges_v.len());
    for (i, m) in merges_v.iter().enumerate() {
        let s = match m {
            Value::String(s) => s.clone(),
            Value::Array(p) if p.len() == 2 && p.iter().all(Value::is_string) => {
                let enc = |v: &Value| v.as_str().unwrap_or_default().replace(' ', "\u{120}");
                format!("{} {}", enc(&p[0]), enc(&p[1]))
            }
            _ => {
                return Err(tok.field_err(
                    &format!("model.merges[{i}]"),
                    "is neither a string nor a pair of strings".into(),
                ))
            }
        };
        merges.push(s.into_bytes());
    }

    let mut md = vec![
        (
            "tokenizer.ggml.model".to_string(),
            MetaValue::string("gpt2"),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            MetaValue::string(pre_name),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            MetaValue::Array(MetaArray::String(tokens)),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            MetaValue::Array(MetaArray::I32(types)),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            MetaValue::Array(MetaArray::String(merges)),
        ),
    ];
    md.extend(special_tokens(
        Some(&tok),
        tcfg.as_ref(),
        config,
        &added_ids,
        n_vocab,
    )?);
    md.extend(chat_template(dir, tcfg.as_ref())?);
    Ok(md)
}

/// The `llama` (SentencePiece) tokenizer metadata for `v`, as llama.cpp's converter writes it.
fn spm_metadata(
    v: SpmVocab,
    tok: Option<&Config>,
    tcfg: Option<&Config>,
    config: &Config,
    dir: &Path,
) -> Result<Vec<(String, MetaValue)>, HfError> {
    let n_vocab = v.tokens.len() as u64;
    let mut md = vec![
        (
            "tokenizer.ggml.model".to_string(),
            MetaValue::string("llama"),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            MetaValue::string("default"),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            MetaValue::Array(MetaArray::String(v.tokens)),
        ),
        (
            "tokenizer.ggml.scores".to_string(),
            MetaValue::Array(MetaArray::F32(v.scores)),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            MetaValue::Array(MetaArray::I32(v.types)),
        ),
    ];
    if let Some(p) = v.add_space_prefix {
        md.push((
            "tokenizer.ggml.add_space_prefix".to_string(),
            MetaValue::Bool(p),
        ));
    }
    let ids: HashMap<&str, u64> = v.specials.iter().map(|(k, &i)| (k.as_str(), i)).collect();
    md.extend(special_tokens(tok, tcfg, config, &ids, n_vocab)?);
    // CodeLlama's infill tokens (llama.cpp's converter sets them for a 32016-token vocabulary).
    if n_vocab == 32016 {
        for (key, id) in [
            ("prefix", 32007),
            ("suffix", 32008),
            ("middle", 32009),
            ("eot", 32010),
        ] {
            md.push((format!("tokenizer.ggml.{key}_token_id"), MetaValue::U32(id)));
        }
    }
    md.extend(chat_template(dir, tcfg)?);
    Ok(md)
}

const SPECIAL: &[(&str, &str)] = &[
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("unk", "tokenizer.ggml.unknown_token_id"),
    ("sep", "tokenizer.ggml.seperator_token_id"),
    ("pad", "tokenizer.ggml.padding_token_id"),
    ("cls", "tokenizer.ggml.cls_token_id"),
    ("mask", "tokenizer.ggml.mask_token_id"),
];

/// Content of a `{typ}_token` entry of tokenizer_config.json (a string or `{"content": …}`).
fn token_content(tcfg: Option<&Config>, typ: &str) -> Option<String> {
    let v = tcfg?.json.get(&format!("{typ}_token"))?;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn special_tokens(
    tok: Option<&Config>,
    tcfg: Option<&Config>,
    config: &Config,
    added_ids: &HashMap<&str, u64>,
    n_vocab: u64,
) -> Result<Vec<(String, MetaValue)>, HfError> {
    let mut ids: Vec<(&str, u64)> = Vec::new();
    let mut add: Vec<(&str, bool)> = Vec::new();
    // TemplateProcessing: a leading BOS / trailing EOS special token means they are added.
    let bos = token_content(tcfg, "bos");
    let eos = token_content(tcfg, "eos");
    if let Some(pp) = tok
        .and_then(|t| t.json.get("post_processor"))
        .filter(|v| !v.is_null())
    {
        let procs: Vec<&Value> = match pp.get("processors").and_then(Value::as_array) {
            Some(a) => a.iter().collect(),
            None => vec![pp],
        };
        for p in procs.into_iter().filter(|p| ty(p) == "TemplateProcessing") {
            let single = p
                .get("single")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let special_id = |v: Option<&Value>| {
                v.and_then(|e| e.get("SpecialToken"))
                    .and_then(|s| s.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            if let Some(first) = special_id(single.first()) {
                add.push(("bos", Some(&first) == bos.as_ref()));
            }
            if let Some(last) = special_id(single.last()) {
                add.push(("eos", Some(&last) == eos.as_ref()));
            }
        }
    }
    for &(typ, _) in SPECIAL {
        if let Some(flag) = tcfg
            .and_then(|c| c.json.get(&format!("add_{typ}_token")))
            .and_then(Value::as_bool)
        {
            add.retain(|(t, _)| *t != typ);
            add.push((typ, flag));
        }
        if let Some(content) = token_content(tcfg, typ) {
            if let Some(&id) = added_ids.get(content.as_str()) {
                ids.push((typ, id));
                continue;
            }
        }
        if let Some(id) = config
            .json
            .get(&format!("{typ}_token_id"))
            .and_then(Value::as_u64)
        {
            if id < n_vocab {
                ids.push((typ, id));
            }
        }
    }
    let mut md: Vec<(String, MetaValue)> = Vec::new();
    for (typ, key) in SPECIAL {
        if let Some((_, id)) = ids.iter().find(|(t, _)| t == typ) {
            md.push((key.to_string(), MetaValue::U32(*id as u32)));
        }
    }
    for typ in ["bos", "eos", "sep"] {
        if let Some((_, flag)) = add.iter().find(|(t, _)| *t == typ) {
            md.push((
                format!("tokenizer.ggml.add_{typ}_token"),
                MetaValue::Bool(*flag),
            ));
        }
    }
    Ok(md)
}

fn chat_template(dir: &Path, tcfg: Option<&Config>) -> Result<Vec<(String, MetaValue)>, HfError> {
    let from_config = tcfg
        .and_then(|c| c.json.get("chat_template"))
        .filter(|v| !v.is_null())
        .cloned();
    let tpl = match from_config {
        Some(v) => Some(v),
        None => {
            let jinja = dir.join("chat_template.jinja");
            let json = dir.join("chat_template.json");
            if jinja.is_file() {
                let s = std::fs::read_to_string(&jinja).map_err(|source| HfError::Io {
                    path: jinja.clone(),
                    source,
                })?;
                Some(Value::String(s))
            } else if let Some(c) = read_optional(&json)? {
                c.json.get("chat_template").cloned()
            } else {
                None
            }
        }
    };
    let mut md = Vec::new();
    match tpl {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            md.push(("tokenizer.chat_template".to_string(), MetaValue::string(&s)))
        }
        Some(Value::Array(list)) => {
            let mut names = Vec::new();
            for (i, e) in list.iter().enumerate() {
                let (Some(name), Some(t)) = (
                    e.get("name").and_then(Value::as_str),
                    e.get("template").and_then(Value::as_str),
                ) else {
                    let path = tcfg
                        .map(|c| c.path.clone())
                        .unwrap_or_else(|| dir.join("tokenizer_config.json"));
                    return Err(HfError::Field {
                        path,
                        field: format!("chat_template[{i}]"),
                        message: "needs 'name' and 'template' strings".into(),
                    });
                };
                if name == "default" {
                    md.push(("tokenizer.chat_template".to_string(), MetaValue::string(t)));
                } else {
                    md.push((
                        format!("tokenizer.chat_template.{name}"),
                        MetaValue::string(t),
                    ));
                    names.push(name.as_bytes().to_vec());
                }
            }
            if !names.is_empty() {
                md.push((
                    "tokenizer.chat_templates".to_string(),
                    MetaValue::Array(MetaArray::String(names)),
                ));
            }
        }
        Some(_) => {
            let path = tcfg
                .map(|c| c.path.clone())
                .unwrap_or_else(|| dir.join("tokenizer_config.json"));
            return Err(HfError::Field {
                path,
                field: "chat_template".into(),
                message: "is neither a string nor a list".into(),
            });
        }
    }
    Ok(md)
}
