//! Model checks on the real lock table and the real recovery (stateright).
//!
//! - [`lifecycle::Lifecycle`]: the command lifecycle (acquire, validate, execute, async tasks,
//!   end-action, crash and recovery); each step runs the real `lockcore` table and
//!   `lockcore-journal` recovery, and properties compare them with a specification of who may
//!   hold what (docs/model.md). `lockcore check` runs it.
//! - [`path`]: hierarchical path locks over a small tree (docs/paths.md).
#![forbid(unsafe_code)]

pub mod lifecycle;
pub mod path;
pub use lockcore;
