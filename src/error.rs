//! The one error type of vlk. Every failure that bad input can cause is an `Err` whose message
//! names the op, tensor or file involved; the library never panics on user input.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Shapes that do not fit an op: `op` plus what was given.
    Shape { op: &'static str, msg: String },
    /// A dtype the op does not support, or two operands of different dtypes.
    DType { op: &'static str, msg: String },
    /// Operands on different devices, or a device that is not available in this build.
    Device { op: &'static str, msg: String },
    /// An index outside its range (embedding ids, narrow, index_select, targets).
    Index { op: &'static str, msg: String },
    /// A file that cannot be read, written or parsed; `path` names it.
    File { path: String, msg: String },
    /// A tensor missing from, or wrong in, a checkpoint.
    Checkpoint { msg: String },
    /// A kernel launch or device runtime failure.
    Kernel { msg: String },
    /// Anything else, with context.
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { op, msg } => write!(f, "{op}: shape error: {msg}"),
            Error::DType { op, msg } => write!(f, "{op}: dtype error: {msg}"),
            Error::Device { op, msg } => write!(f, "{op}: device error: {msg}"),
            Error::Index { op, msg } => write!(f, "{op}: index error: {msg}"),
            Error::File { path, msg } => write!(f, "{path}: {msg}"),
            Error::Checkpoint { msg } => write!(f, "checkpoint: {msg}"),
            Error::Kernel { msg } => write!(f, "kernel: {msg}"),
            Error::Msg(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape { op, msg: msg.into() }
    }
    pub fn dtype(op: &'static str, msg: impl Into<String>) -> Self {
        Error::DType { op, msg: msg.into() }
    }
    pub fn device(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Device { op, msg: msg.into() }
    }
    pub fn index(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Index { op, msg: msg.into() }
    }
    pub fn file(path: impl AsRef<std::path::Path>, msg: impl fmt::Display) -> Self {
        Error::File {
            path: path.as_ref().display().to_string(),
            msg: msg.to_string(),
        }
    }
    pub fn msg(msg: impl Into<String>) -> Self {
        Error::Msg(msg.into())
    }
}

/// Returns early with a shape error: `bail_shape!("matmul", "{:?} x {:?}", a, b)`.
#[macro_export]
macro_rules! bail_shape {
    ($op:expr, $($arg:tt)*) => { return Err($crate::Error::shape($op, format!($($arg)*))) };
}
