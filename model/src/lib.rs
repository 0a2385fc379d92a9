//! Model checks of the command lifecycle on the real lock table and the real recovery.
//!
//! [`lifecycle::Lifecycle`] is a stateright model: each step runs the real `lockcore` table and
//! `lockcore-journal` recovery, and properties compare them with a specification of who may hold
//! what (see docs/model.md). `lockcore check` runs it.
#![forbid(unsafe_code)]

pub mod lifecycle;
pub use lockcore;
