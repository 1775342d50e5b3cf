//! What a rule file says: its format, decoded with positions (`file`), its PromQL (`promql`),
//! its durations and SLO windows (`time`), what `check rules` adds (`lint`) and its
//! translation to Prometheus rule groups (`prom_export`). Nothing here evaluates anything.

pub mod breaker;
pub mod file;
pub mod lint;
pub mod prom_export;
pub mod promql;
pub mod time;
