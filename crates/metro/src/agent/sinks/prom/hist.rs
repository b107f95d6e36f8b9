//! The cumulative histogram behind `metro_tcp_rtt_seconds`: interval bucket counts folded
//! into running totals, encoded by prometheus-client as a histogram.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::agent::fleet::Fine;

/// A cumulative histogram whose buckets are set by the first interval folded in (the
/// configured `histogram_buckets`); an interval with other bounds (a reload changed them)
/// starts it again, which Prometheus reads as a counter reset.
#[derive(Clone, Debug, Default)]
pub struct CumHist(Arc<Mutex<HistState>>);

#[derive(Debug, Default)]
struct HistState {
    /// Upper bounds, seconds.
    bounds: Vec<f64>,
    /// Per bucket (not cumulative), plus +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl CumHist {
    /// Add one interval's bucket counts.
    pub fn add(&self, f: &Fine) {
        let Some(b) = &f.bounds_ms else { return };
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let secs: Vec<f64> = b.iter().map(|ms| ms / 1000.0).collect();
        if st.bounds != secs || st.counts.len() != f.buckets.len() {
            *st = HistState {
                bounds: secs,
                counts: vec![0; f.buckets.len()],
                sum: 0.0,
                count: 0,
            };
        }
        for (a, n) in st.counts.iter_mut().zip(&f.buckets) {
            *a += n;
        }
        st.sum += f.bucket_sum;
        st.count += f.buckets.iter().sum::<u64>();
    }
}

impl TypedMetric for CumHist {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CumHist {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // prometheus-client accumulates the counts and writes f64::MAX as +Inf.
        let buckets: Vec<(f64, u64)> = st
            .bounds
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(st.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(st.sum, st.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
