//! Connectors to systems outside eddy. Only this module imports rdkafka.

pub mod kafka;
pub mod nexmark;
