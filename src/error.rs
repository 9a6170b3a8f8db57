//! The error vocabulary shared by Rust and TypeScript.

use std::fmt;

/// Stable error codes. The string form (`as_str`) is the `code` property of the
/// JS `Error`; it never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// An option has the wrong type or an out-of-range value (the message names it).
    InvalidArgument,
    /// No model with that id is loaded.
    ModelNotFound,
    /// The model file is missing, unreadable, corrupt or of an unsupported kind.
    ModelLoadFailed,
    /// The call's deadline passed (`timeoutMs`).
    Timeout,
    /// The caller's `AbortSignal` fired.
    Aborted,
    /// More requests are waiting than `maxQueued` allows.
    QueueFull,
    /// The engine or model is shutting down and takes no new work.
    ShuttingDown,
    /// The prompt (plus `maxTokens`, when given) does not fit the model's context.
    ContextOverflow,
    /// The worker serving the request panicked; it has been replaced.
    WorkerCrashed,
    /// The worker serving the request stopped making progress; it has been replaced.
    WorkerHung,
    /// A prompt cache file cannot be used: made by another model, of another
    /// format version, truncated or altered (the message says which).
    CacheInvalid,
    /// A prompt cache file could not be written (the message says why).
    CacheWriteFailed,
    /// The request's output grammar (schema, pattern, grammar, tool calls)
    /// went past one of llguidance's limits while generating; the tokens
    /// produced before are delivered, batch mates go on.
    GrammarTooComplex,
    /// A bug in this library. Please report it.
    Internal,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::InvalidArgument,
        ErrorCode::ModelNotFound,
        ErrorCode::ModelLoadFailed,
        ErrorCode::Timeout,
        ErrorCode::Aborted,
        ErrorCode::QueueFull,
        ErrorCode::ShuttingDown,
        ErrorCode::ContextOverflow,
        ErrorCode::WorkerCrashed,
        ErrorCode::WorkerHung,
        ErrorCode::CacheInvalid,
        ErrorCode::CacheWriteFailed,
        ErrorCode::GrammarTooComplex,
        ErrorCode::Internal,
    ];

    /// The stable string form, e.g. `"INVALID_ARGUMENT"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::ModelNotFound => "MODEL_NOT_FOUND",
            ErrorCode::ModelLoadFailed => "MODEL_LOAD_FAILED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Aborted => "ABORTED",
            ErrorCode::QueueFull => "QUEUE_FULL",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::ContextOverflow => "CONTEXT_OVERFLOW",
            ErrorCode::WorkerCrashed => "WORKER_CRASHED",
            ErrorCode::WorkerHung => "WORKER_HUNG",
            ErrorCode::CacheInvalid => "CACHE_INVALID",
            ErrorCode::CacheWriteFailed => "CACHE_WRITE_FAILED",
            ErrorCode::GrammarTooComplex => "GRAMMAR_TOO_COMPLEX",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A library error: a stable code plus a human-readable message with its cause chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }

    /// `INVALID_ARGUMENT` naming the offending field.
    pub fn invalid(field: &str, why: impl fmt::Display) -> Self {
        Error::new(ErrorCode::InvalidArgument, format!("{field}: {why}"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }
}

impl From<mlx_rs::error::Exception> for Error {
    fn from(e: mlx_rs::error::Exception) -> Self {
        Error::internal(format!("MLX: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
