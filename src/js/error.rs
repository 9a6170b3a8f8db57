//! Core errors to JS errors: the `code` property is the stable `ErrorCode`.

use crate::error::{Error, ErrorCode};

/// The status of a napi error: our stable code string.
pub struct Code(&'static str);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}


pub fn to_js(e: Error) -> napi::Error<Code> {
    napi::Error::new(Code(e.code.as_str()), e.message)
}

/// An error carried as data (for promises and stream events, where the JS
/// wrapper builds the `Error` so its name and stack are right).
#[napi(object)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

impl From<Error> for ErrorInfo {
    fn from(e: Error) -> Self {
        ErrorInfo { code: e.code.as_str().to_string(), message: e.message }
    }
}

/// Every error code, in documentation order.
#[napi]
pub fn error_codes() -> Vec<String> {
    ErrorCode::ALL.iter().map(|c| c.as_str().to_string()).collect()
}
