//! A small safe wrapper over llama.cpp (through `llama-cpp-sys-2`), owned by this project.
//!
//! What the converter needs from llama.cpp and nothing more: load a GGUF model on the CPU
//! (memory-mapped), create a context, tokenise exactly as llama.cpp does, decode batches, read
//! logits, observe every matrix multiplication's input through `cb_eval` ([`EvalCallback`]), run
//! `llama_model_quantize` in process ([`quantize`]) and reach ggml's own kernels ([`ggml`]).
//!
//! Every entry point initialises the llama.cpp backend once ([`init`]). llama.cpp's log is routed
//! through [`set_log_level`]; by default only errors are printed.

pub mod ggml;
pub mod quantize;

mod callback;

pub use callback::{EvalCallback, MatMulInfo, MatMulInput, MatMulKind};
pub use quantize::{llama_quantize, Ftype, ImatrixData};

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Mutex, Once};

use llama_cpp_sys_2 as sys;

/// Errors from the llama.cpp wrapper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlamaError {
    /// A file could not be read before handing it to llama.cpp.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A path cannot be passed to C (it contains a NUL byte).
    #[error("path {0} contains a NUL byte")]
    InvalidPath(PathBuf),
    /// llama.cpp refused the model file.
    #[error("llama.cpp failed to load model {path}{}", detail_suffix(.detail))]
    ModelLoad {
        /// The model file.
        path: PathBuf,
        /// The errors llama.cpp logged during the call, if any.
        detail: Option<String>,
    },
    /// llama.cpp could not create a context.
    #[error("llama.cpp failed to create a context (n_ctx {n_ctx}, n_batch {n_batch}){}", detail_suffix(.detail))]
    ContextCreate {
        /// Requested context length.
        n_ctx: u32,
        /// Requested batch size.
        n_batch: u32,
        /// The errors llama.cpp logged during the call, if any.
        detail: Option<String>,
    },
    /// Invalid parameters were passed to a wrapper function.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Tokenisation failed.
    #[error("tokenisation failed: {0}")]
    Tokenize(String),
    /// A token id outside the vocabulary.
    #[error("token id {token} is outside the vocabulary (n_vocab {n_vocab})")]
    InvalidToken {
        /// The token id.
        token: i32,
        /// Vocabulary size.
        n_vocab: usize,
    },
    /// More tokens than the context's batch size in one decode call.
    #[error("batch of {n_tokens} tokens exceeds n_batch {n_batch}")]
    BatchTooLarge {
        /// Tokens passed.
        n_tokens: usize,
        /// The context's batch size.
        n_batch: usize,
    },
    /// The batch would run past the end of the context window.
    #[error("positions {first_pos}..{end} do not fit in a context of {n_ctx} tokens")]
    ContextOverflow {
        /// First position of the batch.
        first_pos: i32,
        /// One past the last position.
        end: i64,
        /// Context length.
        n_ctx: usize,
    },
    /// `llama_decode` returned an error code.
    #[error("llama_decode failed with code {code}{}", detail_suffix(.detail))]
    Decode {
        /// The return code (1: no KV slot, 2: aborted, <0: invalid batch or fatal error).
        code: i32,
        /// The errors llama.cpp logged during the call, if any.
        detail: Option<String>,
    },
    /// The eval callback panicked; the decode was aborted.
    #[error("eval callback panicked: {0}")]
    CallbackPanicked(String),
    /// The eval callback asked to stop; the decode was aborted.
    #[error("eval callback aborted the decode")]
    CallbackAborted,
    /// Logits were requested for a batch index that produced none.
    #[error("no logits for batch index {index} of the last decode")]
    NoLogits {
        /// The batch index asked for.
        index: usize,
    },
    /// An unknown llama.cpp file type name.
    #[error("unknown llama.cpp file type {0:?}")]
    UnknownFtype(String),
    /// Invalid importance-matrix data.
    #[error("imatrix entry {name:?}: {reason}")]
    Imatrix {
        /// The weight name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// `llama_model_quantize` failed.
    #[error("llama_model_quantize {input} -> {output} failed{}", detail_suffix(.detail))]
    Quantize {
        /// Input file.
        input: PathBuf,
        /// Output file.
        output: PathBuf,
        /// The errors llama.cpp logged during the call, if any.
        detail: Option<String>,
    },
    /// A ggml kernel accessor was used with an unsupported type or inconsistent sizes.
    #[error("ggml: {0}")]
    Ggml(String),
}

impl From<std::convert::Infallible> for LlamaError {
    fn from(never: std::convert::Infallible) -> LlamaError {
        match never {}
    }
}

fn detail_suffix(detail: &Option<String>) -> String {
    match detail {
        Some(d) => format!(": {d}"),
        None => String::new(),
    }
}

/// Result alias for this module.
pub type Result<T, E = LlamaError> = std::result::Result<T, E>;

/// How much of llama.cpp's own log reaches stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LogLevel {
    /// Print nothing.
    Quiet = 0,
    /// Print errors (the default).
    Errors = 1,
    /// Print warnings and errors.
    Warnings = 2,
    /// Print everything llama.cpp logs (model metadata, timings, debug).
    Verbose = 3,
}

static LOG_LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Errors as u8);
/// Level of the previous message, for `GGML_LOG_LEVEL_CONT` continuations.
static LAST_LEVEL: AtomicU32 = AtomicU32::new(sys::GGML_LOG_LEVEL_INFO);
/// Error lines llama.cpp logged since the last `clear_last_error` (at most
/// [`MAX_ERROR_LINES`]), used to explain failures.
static LAST_ERROR: Mutex<Vec<String>> = Mutex::new(Vec::new());
const MAX_ERROR_LINES: usize = 8;
static INIT: Once = Once::new();

/// Choose how much of llama.cpp's log is printed to stderr. Errors are always remembered to
/// explain failures, whatever the level.
pub fn set_log_level(level: LogLevel) {
    LOG_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The current log level.
pub fn log_level() -> LogLevel {
    match LOG_LEVEL.load(Ordering::Relaxed) {
        0 => LogLevel::Quiet,
        1 => LogLevel::Errors,
        2 => LogLevel::Warnings,
        _ => LogLevel::Verbose,
    }
}

unsafe extern "C" fn log_callback(
    level: sys::ggml_log_level,
    text: *const c_char,
    _ud: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    let level = if level == sys::GGML_LOG_LEVEL_CONT {
        LAST_LEVEL.load(Ordering::Relaxed)
    } else {
        LAST_LEVEL.store(level, Ordering::Relaxed);
        level
    };
    // SAFETY: ggml passes a NUL-terminated string valid for the duration of the call.
    let msg = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    if level == sys::GGML_LOG_LEVEL_ERROR {
        let line = msg.trim();
        if !line.is_empty() {
            if let Ok(mut lines) = LAST_ERROR.lock() {
                if lines.len() < MAX_ERROR_LINES {
                    lines.push(line.to_string());
                }
            }
        }
    }
    let needed = match level {
        sys::GGML_LOG_LEVEL_ERROR => LogLevel::Errors,
        sys::GGML_LOG_LEVEL_WARN => LogLevel::Warnings,
        _ => LogLevel::Verbose,
    };
    if log_level() >= needed {
        eprint!("{msg}");
    }
}

/// Forget the remembered llama.cpp error, so a later failure reports only its own message.
fn clear_last_error() {
    if let Ok(mut lines) = LAST_ERROR.lock() {
        lines.clear();
    }
}

/// The error lines llama.cpp logged since `clear_last_error`, joined.
fn take_last_error() -> Option<String> {
    let lines = std::mem::take(&mut *LAST_ERROR.lock().ok()?);
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// Initialise the llama.cpp backend and install the log router. Idempotent and thread-safe; every
/// other function in this module calls it.
pub fn init() {
    INIT.call_once(|| {
        // SAFETY: plain C initialisation calls; the callback is a 'static function that only
        // touches atomics and a mutex.
        unsafe {
            sys::llama_log_set(Some(log_callback), std::ptr::null_mut());
            sys::ggml_log_set(Some(log_callback), std::ptr::null_mut());
            sys::llama_backend_init();
            sys::ggml_cpu_init();
        }
    });
}

fn path_cstring(path: &Path) -> Result<CString> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        CString::new(path.as_os_str().as_bytes()).map_err(|_| LlamaError::InvalidPath(path.into()))
    }
    #[cfg(not(unix))]
    {
        CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| LlamaError::InvalidPath(path.into()))
    }
}

/// Check that `path` is a readable regular file before llama.cpp sees it.
fn check_readable_file(path: &Path) -> Result<()> {
    let io = |source| LlamaError::Io {
        path: path.into(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    std::fs::File::open(path).map_err(io)?;
    Ok(())
}

/// A model loaded by llama.cpp: CPU only, weights memory-mapped.
pub struct Model {
    ptr: *mut sys::llama_model,
    vocab: *const sys::llama_vocab,
    path: PathBuf,
}

// SAFETY: a llama_model is immutable after loading; llama.cpp shares one model between contexts
// on different threads.
unsafe impl Send for Model {}
// SAFETY: see above; all methods take &self and only read.
unsafe impl Sync for Model {}

impl Model {
    /// Load a GGUF model on the CPU with mmap. Errors (never aborts) when the file is missing or
    /// llama.cpp rejects it; the error names the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        init();
        check_readable_file(path)?;
        let c_path = path_cstring(path)?;
        // SAFETY: default params are plain data; we only change scalar fields.
        let mut params = unsafe { sys::llama_model_default_params() };
        params.n_gpu_layers = 0;
        params.load_mode = sys::LLAMA_LOAD_MODE_MMAP;
        params.progress_callback = None;
        params.progress_callback_user_data = std::ptr::null_mut();
        clear_last_error();
        // SAFETY: c_path is a valid NUL-terminated string; params is a valid struct.
        let ptr = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), params) };
        if ptr.is_null() {
            return Err(LlamaError::ModelLoad {
                path: path.into(),
                detail: take_last_error(),
            });
        }
        // SAFETY: ptr is a valid model; the vocab lives as long as the model.
        let vocab = unsafe { sys::llama_model_get_vocab(ptr) };
        if vocab.is_null() {
            // SAFETY: ptr came from llama_model_load_from_file and is freed once.
            unsafe { sys::llama_model_free(ptr) };
            return Err(LlamaError::ModelLoad {
                path: path.into(),
                detail: Some("model has no vocabulary".into()),
            });
        }
        Ok(Model {
            ptr,
            vocab,
            path: path.into(),
        })
    }

    /// The file this model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Vocabulary size (number of logits per token).
    pub fn n_vocab(&self) -> usize {
        // SAFETY: vocab is valid for the model's lifetime.
        let n = unsafe { sys::llama_vocab_n_tokens(self.vocab) };
        n.max(0) as usize
    }

    /// Embedding width.
    pub fn n_embd(&self) -> usize {
        // SAFETY: valid model pointer.
        unsafe { sys::llama_model_n_embd(self.ptr) }.max(0) as usize
    }

    /// Number of transformer layers.
    pub fn n_layer(&self) -> usize {
        // SAFETY: valid model pointer.
        unsafe { sys::llama_model_n_layer(self.ptr) }.max(0) as usize
    }

    /// Total number of parameters.
    pub fn n_params(&self) -> u64 {
        // SAFETY: valid model pointer.
        unsafe { sys::llama_model_n_params(self.ptr) }
    }

    /// Total size of all weight tensors in bytes.
    pub fn size_bytes(&self) -> u64 {
        // SAFETY: valid model pointer.
        unsafe { sys::llama_model_size(self.ptr) }
    }

    /// llama.cpp's one-line description (architecture, size, type).
    pub fn description(&self) -> String {
        let mut buf = vec![0u8; 256];
        // SAFETY: buf is writable for buf.len() bytes; llama.cpp NUL-terminates within it.
        let n = unsafe { sys::llama_model_desc(self.ptr, buf.as_mut_ptr().cast(), buf.len()) };
        let n = (n.max(0) as usize).min(buf.len() - 1);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Whether the tokenizer adds a BOS token at the start of a text.
    pub fn add_bos(&self) -> bool {
        // SAFETY: valid vocab pointer.
        unsafe { sys::llama_vocab_get_add_bos(self.vocab) }
    }

    /// Whether the tokenizer adds an EOS token at the end of a text.
    pub fn add_eos(&self) -> bool {
        // SAFETY: valid vocab pointer.
        unsafe { sys::llama_vocab_get_add_eos(self.vocab) }
    }

    /// The BOS token id (may be -1 when the vocabulary has none).
    pub fn bos(&self) -> i32 {
        // SAFETY: valid vocab pointer.
        unsafe { sys::llama_vocab_bos(self.vocab) }
    }

    /// Tokenise `text` exactly as llama.cpp does. `add_special` adds BOS/EOS when the model's
    /// tokenizer is configured to; special-token text is treated as plain text.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<i32>> {
        let len = i32::try_from(text.len()).map_err(|_| {
            LlamaError::Tokenize(format!("text of {} bytes is too long", text.len()))
        })?;
        // A first guess that fits almost every text; llama.cpp reports the exact size otherwise.
        let mut cap = text.len() / 2 + 8;
        for _ in 0..2 {
            let cap_i32 = i32::try_from(cap)
                .map_err(|_| LlamaError::Tokenize("token count exceeds i32".into()))?;
            let mut out = vec![0i32; cap];
            // SAFETY: text is valid for len bytes (no NUL terminator needed since text_len is
            // given); out is writable for cap tokens.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab,
                    text.as_ptr().cast(),
                    len,
                    out.as_mut_ptr(),
                    cap_i32,
                    add_special,
                    false,
                )
            };
            if n == i32::MIN {
                return Err(LlamaError::Tokenize("token count overflows i32".into()));
            }
            if n >= 0 {
                out.truncate(n as usize);
                return Ok(out);
            }
            cap = n.unsigned_abs() as usize;
        }
        Err(LlamaError::Tokenize(
            "llama_tokenize reported inconsistent sizes".into(),
        ))
    }

    /// The text of one token (special tokens rendered), lossily decoded as UTF-8.
    pub fn token_to_piece(&self, token: i32) -> Result<String> {
        let n_vocab = self.n_vocab();
        if token < 0 || token as usize >= n_vocab {
            return Err(LlamaError::InvalidToken { token, n_vocab });
        }
        let mut buf = vec![0u8; 64];
        for _ in 0..2 {
            // SAFETY: buf is writable for buf.len() bytes; token is in range.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab,
                    token,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    0,
                    true,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            buf = vec![0u8; n.unsigned_abs() as usize];
        }
        Err(LlamaError::Tokenize(format!("cannot render token {token}")))
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::llama_model {
        self.ptr
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: ptr came from llama_model_load_from_file; contexts borrow the model, so none
        // outlives it.
        unsafe { sys::llama_model_free(self.ptr) };
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("n_vocab", &self.n_vocab())
            .finish()
    }
}

/// Parameters of a [`Context`].
pub struct ContextParams {
    /// Context window in tokens.
    pub n_ctx: u32,
    /// Maximum tokens per [`Context::decode`] call (also the physical micro-batch).
    pub n_batch: u32,
    /// Threads for evaluation (0 = all available cores).
    pub n_threads: usize,
    /// Observer of every matrix multiplication's input (`cb_eval`), if any.
    pub eval_callback: Option<Box<dyn EvalCallback + Send>>,
}

impl Default for ContextParams {
    fn default() -> Self {
        ContextParams {
            n_ctx: 512,
            n_batch: 512,
            n_threads: 0,
            eval_callback: None,
        }
    }
}

impl std::fmt::Debug for ContextParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextParams")
            .field("n_ctx", &self.n_ctx)
            .field("n_batch", &self.n_batch)
            .field("n_threads", &self.n_threads)
            .field("eval_callback", &self.eval_callback.is_some())
            .finish()
    }
}

/// Number of threads to use when the caller asks for 0.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// An evaluation context over a [`Model`] (one sequence, its own KV cache).
pub struct Context<'m> {
    ptr: *mut sys::llama_context,
    model: &'m Model,
    n_ctx: usize,
    n_batch: usize,
    n_vocab: usize,
    /// Which batch indices of the last decode produced logits.
    outputs: Vec<bool>,
    /// The eval-callback state: a leaked box whose address llama.cpp holds as user data. Only
    /// touched through this pointer (never while llama.cpp may call back); freed in `Drop`.
    callback: Option<NonNull<callback::CallbackState>>,
}

// SAFETY: a llama_context may be moved between threads as long as it is used by one at a time
// (&mut self on every mutating call); the callback is Send.
unsafe impl Send for Context<'_> {}

impl<'m> Context<'m> {
    /// Create a context. Errors if the parameters are invalid or llama.cpp fails.
    pub fn new(model: &'m Model, params: ContextParams) -> Result<Context<'m>> {
        init();
        if params.n_ctx < 2 {
            return Err(LlamaError::InvalidArgument(format!(
                "n_ctx {} is too small",
                params.n_ctx
            )));
        }
        if params.n_batch == 0 {
            return Err(LlamaError::InvalidArgument(
                "n_batch must be positive".into(),
            ));
        }
        let n_batch = params.n_batch.min(params.n_ctx);
        let threads = if params.n_threads == 0 {
            default_threads()
        } else {
            params.n_threads
        };
        let threads = i32::try_from(threads).unwrap_or(i32::MAX);
        // SAFETY: default params are plain data.
        let mut cp = unsafe { sys::llama_context_default_params() };
        cp.n_ctx = params.n_ctx;
        cp.n_batch = n_batch;
        cp.n_ubatch = n_batch;
        cp.n_seq_max = 1;
        cp.n_threads = threads;
        cp.n_threads_batch = threads;
        cp.no_perf = true;
        cp.embeddings = false;
        let callback = params
            .eval_callback
            .map(|cb| NonNull::from(Box::leak(Box::new(callback::CallbackState::new(cb)))));
        if let Some(state) = callback {
            cp.cb_eval = Some(callback::trampoline);
            cp.cb_eval_user_data = state.as_ptr().cast();
        }
        clear_last_error();
        // SAFETY: the model outlives the context ('m); the callback state is boxed and owned by
        // the returned Context, which frees the llama_context before dropping it.
        let ptr = unsafe { sys::llama_init_from_model(model.as_ptr(), cp) };
        if ptr.is_null() {
            if let Some(state) = callback {
                // SAFETY: leaked above, and llama.cpp holds no context that could use it.
                drop(unsafe { Box::from_raw(state.as_ptr()) });
            }
            return Err(LlamaError::ContextCreate {
                n_ctx: params.n_ctx,
                n_batch,
                detail: take_last_error(),
            });
        }
        // SAFETY: valid context pointer.
        let real_ctx = unsafe { sys::llama_n_ctx(ptr) } as usize;
        let real_batch = unsafe { sys::llama_n_batch(ptr) } as usize;
        Ok(Context {
            ptr,
            model,
            n_ctx: real_ctx,
            n_batch: real_batch.min(n_batch as usize),
            n_vocab: model.n_vocab(),
            outputs: Vec::new(),
            callback,
        })
    }

    /// The model this context evaluates.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Context window in tokens (as llama.cpp allocated it; may exceed the request).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Maximum tokens per decode call.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Tokenise with this context's model (see [`Model::tokenize`]).
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<i32>> {
        self.model.tokenize(text, add_special)
    }

    /// Clear the KV cache (start a new, independent sequence).
    pub fn clear_kv_cache(&mut self) {
        // SAFETY: valid context; the memory handle belongs to it.
        unsafe {
            let mem = sys::llama_get_memory(self.ptr);
            if !mem.is_null() {
                sys::llama_memory_clear(mem, true);
            }
        }
        self.outputs.clear();
    }

    /// Decode `tokens` at positions `first_pos..`, continuing the sequence in the KV cache.
    /// Logits are kept for every token when `want_logits_for_all`, otherwise for the last only.
    ///
    /// After an error (in particular an aborted or panicked eval callback) part of the batch may
    /// remain in the KV cache: call [`Context::clear_kv_cache`] before reusing the context.
    pub fn decode(
        &mut self,
        tokens: &[i32],
        first_pos: i32,
        want_logits_for_all: bool,
    ) -> Result<()> {
        let from = if want_logits_for_all {
            0
        } else {
            tokens.len().saturating_sub(1)
        };
        self.decode_with_outputs(tokens, first_pos, from)
    }

    /// Decode `tokens` at positions `first_pos..`, keeping logits for batch indices
    /// `output_from..tokens.len()` only (cheaper when only the tail is scored).
    pub fn decode_with_outputs(
        &mut self,
        tokens: &[i32],
        first_pos: i32,
        output_from: usize,
    ) -> Result<()> {
        let n = tokens.len();
        if n == 0 {
            return Err(LlamaError::InvalidArgument("empty batch".into()));
        }
        if n > self.n_batch {
            return Err(LlamaError::BatchTooLarge {
                n_tokens: n,
                n_batch: self.n_batch,
            });
        }
        let end = first_pos as i64 + n as i64;
        if first_pos < 0 || end > self.n_ctx as i64 {
            return Err(LlamaError::ContextOverflow {
                first_pos,
                end,
                n_ctx: self.n_ctx,
            });
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t < 0 || t as usize >= self.n_vocab)
        {
            return Err(LlamaError::InvalidToken {
                token: bad,
                n_vocab: self.n_vocab,
            });
        }
        let mut token = tokens.to_vec();
        let mut pos: Vec<i32> = (0..n as i32).map(|i| first_pos + i).collect();
        let mut n_seq_id = vec![1i32; n];
        let mut seq0 = vec![0i32; n];
        let mut seq_id: Vec<*mut i32> = seq0.iter_mut().map(|s| s as *mut i32).collect();
        let mut logits: Vec<i8> = (0..n).map(|i| i8::from(i >= output_from)).collect();
        let batch = sys::llama_batch {
            n_tokens: n as i32,
            token: token.as_mut_ptr(),
            embd: std::ptr::null_mut(),
            pos: pos.as_mut_ptr(),
            n_seq_id: n_seq_id.as_mut_ptr(),
            seq_id: seq_id.as_mut_ptr(),
            logits: logits.as_mut_ptr(),
        };
        if let Some(cb) = self.callback {
            // SAFETY: llama.cpp only calls back inside llama_decode; no other reference exists.
            unsafe { (*cb.as_ptr()).reset() };
        }
        self.outputs.clear();
        clear_last_error();
        // SAFETY: every array has n valid entries and outlives the call; llama_decode copies
        // what it keeps.
        let code = unsafe { sys::llama_decode(self.ptr, batch) };
        if let Some(cb) = self.callback {
            // SAFETY: llama_decode has returned; no other reference exists.
            let cb = unsafe { &mut *cb.as_ptr() };
            if let Some(msg) = cb.take_panic() {
                return Err(LlamaError::CallbackPanicked(msg));
            }
            if cb.take_aborted() {
                return Err(LlamaError::CallbackAborted);
            }
        }
        if code != 0 {
            return Err(LlamaError::Decode {
                code,
                detail: take_last_error(),
            });
        }
        self.outputs = logits.iter().map(|&l| l != 0).collect();
        Ok(())
    }

    /// Logits (`n_vocab` values) for batch index `i` of the last decode.
    pub fn logits(&self, i: usize) -> Result<&[f32]> {
        if !self.outputs.get(i).copied().unwrap_or(false) {
            return Err(LlamaError::NoLogits { index: i });
        }
        // SAFETY: i is a batch index that produced an output, so llama.cpp returns a pointer to
        // n_vocab floats that stays valid until the next decode (which needs &mut self).
        let p = unsafe { sys::llama_get_logits_ith(self.ptr, i as i32) };
        if p.is_null() {
            return Err(LlamaError::NoLogits { index: i });
        }
        // SAFETY: see above.
        Ok(unsafe { std::slice::from_raw_parts(p, self.n_vocab) })
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: ptr came from llama_init_from_model and is freed once, before the callback
        // state it may call into.
        unsafe { sys::llama_free(self.ptr) };
        if let Some(state) = self.callback.take() {
            // SAFETY: leaked in Context::new; the context that used it is gone.
            drop(unsafe { Box::from_raw(state.as_ptr()) });
        }
    }
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("model", &self.model.path)
            .field("n_ctx", &self.n_ctx)
            .field("n_batch", &self.n_batch)
            .finish()
    }
}

/// What [`smoke_test`] found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SmokeReport {
    /// llama.cpp's model description.
    pub description: String,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Tokens in the fixed prompt (including BOS if added).
    pub n_prompt_tokens: usize,
    /// Whether every logit of every prompt position was finite.
    pub all_logits_finite: bool,
    /// The most likely next token after the prompt.
    pub argmax_token: i32,
    /// Its text.
    pub argmax_piece: String,
}

/// The fixed prompt [`smoke_test`] evaluates.
pub const SMOKE_PROMPT: &str = "The capital of France is";

/// Load a GGUF with llama.cpp, evaluate [`SMOKE_PROMPT`] and report whether the logits are sane.
pub fn smoke_test(path: impl AsRef<Path>) -> Result<SmokeReport> {
    let model = Model::load(path)?;
    let tokens = model.tokenize(SMOKE_PROMPT, true)?;
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: 64,
            n_batch: 64,
            n_threads: 0,
            eval_callback: None,
        },
    )?;
    ctx.decode(&tokens, 0, true)?;
    let mut all_finite = true;
    for i in 0..tokens.len() {
        all_finite &= ctx.logits(i)?.iter().all(|v| v.is_finite());
    }
    let last = ctx.logits(tokens.len() - 1)?;
    let argmax = argmax(last) as i32;
    Ok(SmokeReport {
        description: model.description(),
        n_vocab: model.n_vocab(),
        n_prompt_tokens: tokens.len(),
        all_logits_finite: all_finite,
        argmax_token: argmax,
        argmax_piece: model.token_to_piece(argmax)?,
    })
}

/// Index of the largest value (the first on ties, as llama.cpp's `perplexity` does); NaN never
/// wins.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in values.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best
}
