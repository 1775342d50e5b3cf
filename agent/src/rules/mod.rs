//! The rule engine. See `file` (rule files), `expr` (PromQL subset), `alert` (alert state
//! machine), `slo` (SLOs, error budgets, burn-rate alerts), `engine` (group evaluation and
//! reload), `alertmanager` (notifications).

pub mod alert;
pub mod alertmanager;
pub mod engine;
pub mod expr;
pub mod file;
pub mod metrics;
pub mod runtime;
pub mod slo;
pub mod unittest;
