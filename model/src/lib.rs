//! Model checks of the command lifecycle on the real lock table (grows with the lifecycle-model issue).
#![forbid(unsafe_code)]
pub use lockcore;

pub mod path;
