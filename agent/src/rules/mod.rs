//! The rule engine (issue 5). One direction, like the rest of the agent:
//!
//! - `file`: rule files (groups of alerting rules and SLOs), strictly decoded with every
//!   problem located at file:line:column;
//! - `expr`: the PromQL subset, parsed by promql-parser, evaluated over `crate::store`;
//! - `alert`: the pending/firing/resolved state machine with `for` and `keep_firing_for`;
//! - `slo`: burn rates, multiwindow multi-burn-rate alerts, error budgets persisted on disk;
//! - `engine`: the loaded groups and their state, evaluation at a given time, reload
//!   carrying state over, the notifications to send;
//! - `alertmanager`: the API v2 sender; `metrics`: the engine's metric families;
//! - `runtime`: the daemon side (wall clock, SIGHUP, `POST /-/reload`, directory watch);
//! - `lint`: what `check rules` says beyond the syntax (selectors that cannot match the
//!   agent's catalogue, group intervals the engine cannot keep);
//! - `unittest`: `steadfast test rules`; `prom_export`: `steadfast rules export` (Prometheus
//!   rule groups for fleet-wide evaluation).
//!
//! Everything below `runtime` takes time as an argument, so tests inject it.

pub mod alert;
pub mod alertmanager;
pub mod engine;
pub mod expr;
pub mod file;
pub mod lint;
pub mod metrics;
pub mod prom_export;
pub mod runtime;
pub mod slo;
pub mod unittest;
