//! The rule engine (issue 5), in four layers, each importing only the ones before it
//! (`layers::RULES_LAYERS`, checked by `cargo test -p steadfast --lib layers`):
//!
//! - `spec`: what a rule file says. `file`: rule files (groups of alerting and recording
//!   rules, SLOs, breakers, signals) strictly decoded from saphyr's marked nodes, every problem
//!   located at file:line:column; `promql`: the PromQL subset, parsed by promql-parser and
//!   checked; `time`: durations and SLO burn-rate windows; `lint`: what `check rules` says
//!   beyond the syntax (selectors that cannot match the agent's catalogue, group intervals the
//!   engine cannot keep); `prom_export`: `steadfast rules export` (Prometheus rule groups for
//!   fleet-wide evaluation);
//! - `eval`: PromQL evaluation over `crate::store` at one instant;
//! - `engine`: the loaded groups and their state, evaluation at a given time, reload carrying
//!   state over, the notifications to send and what control is told; `engine::alert`: the
//!   pending/firing/resolved state machine with `for` and `keep_firing_for`; `engine::slo`:
//!   burn rates, multiwindow multi-burn-rate alerts, error budgets persisted on disk;
//! - `runtime`: the daemon side (wall clock, files, the store fed from snapshots, SIGHUP and
//!   `POST /-/reload` through `crate::reload`); `runtime::alertmanager`: the API v2 sender;
//!   `runtime::metrics`: the engine's metric families. `steadfast test rules` (which runs the
//!   rules against control's breakers on a test clock) is `crate::ruletest`, above both.
//!
//! Everything below `runtime` takes time as an argument, so tests inject it.

pub mod engine;
pub mod eval;
pub mod runtime;
pub mod spec;
