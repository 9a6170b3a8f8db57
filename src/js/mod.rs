//! The napi surface: the only module that knows about Node. Option objects
//! arrive typed (the JS wrapper in `lib/` checks types of untyped callers),
//! are validated into core types here, and core errors become JS errors in
//! `error.rs`.

mod engine;
mod error;
mod options;
mod stream;
