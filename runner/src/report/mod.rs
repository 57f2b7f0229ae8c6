//! The report (docs/report.md), in the shape of ripgrep's printers: its
//! model ([`model`]), the aggregation of events into it ([`aggregate`]), the
//! exit status decided from it ([`status`]), and its renderers ([`text`],
//! [`json`]).

pub mod aggregate;
mod build;
mod json;
mod model;
pub(crate) mod status;
pub(crate) mod text;

pub use aggregate::{read_logs, Aggregator};
pub use build::{LogFacts, LogSource, MergeFacts, RunFacts};
pub use model::*;
