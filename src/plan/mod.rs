//! Planning: statements → DataFusion logical plans → eddy dataflow.
//!
//! [`context`] lets DataFusion resolve eddy's relations; [`lower`] turns an optimized
//! logical plan into incremental operators; [`errors`] maps DataFusion's errors onto
//! eddy's.

pub mod context;
pub mod errors;
pub mod event_time;
pub mod functions;
pub mod lower;
pub mod rewrite;
pub mod windows;

pub use context::{base_session_state, PlanContext, RelationTable};
pub use lower::{Lowering, ViewWindow};
