//! The task shim lives in its own small crate, dron-shim (so that the static `dron-shim`
//! binary builds without tokio or ractor); re-exported under its old path.

pub use dron_shim::shim::*;
