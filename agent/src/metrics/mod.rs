//! Prometheus exposition: the metric catalogue as a prometheus-client registry, and the HTTP
//! endpoint that serves it (OpenMetrics or Prometheus text, by content negotiation).

mod catalogue;
pub mod encode;
pub mod exposition;
pub mod server;

#[cfg(test)]
pub use catalogue::{
    classic_reference_families, hist_of, kernel_histogram_families, ClassicReferenceForTests,
    KernelHistogramForTests,
};
pub use catalogue::{export_buckets, register_export_stats, registry, SCRAPE_BUCKETS};
