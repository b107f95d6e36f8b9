//! The cumulative histogram behind `metro_tcp_rtt_seconds`: interval bucket counts folded
//! into running totals, encoded by prometheus-client as a histogram: classic buckets in the
//! text formats, and in protobuf also the native (sparse, exponential) buckets from the
//! series' exponential histogram ([`ExpHist`], kept at [`EXP_SCALE`]).
//!
//! A native histogram's schema is OpenTelemetry's scale (both divide each power of two into
//! 2^scale buckets), but the indexes differ by one: OpenTelemetry's bucket `i` is
//! (base^i, base^(i+1)], Prometheus's bucket `i` is (base^(i-1), base^i]. The zero bucket's
//! threshold is [`EXP_ZERO_THRESHOLD`], nonzero, which is also what tells Prometheus 2.42
//! (it has no other way) that a histogram without observations is a native one.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{
    EncodeMetric, MetricEncoder, NativeHistogram, NativeHistogramBuckets, NoLabelSet,
};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::agent::fleet::{EXP_SCALE, EXP_ZERO_THRESHOLD, Exemplar, ExpHist, Fine};

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
    /// The same samples in exponential buckets, when the intervals kept them.
    exp: Option<ExpHist>,
    /// Per classic bucket, the last exemplar that fell in it (each interval offers its
    /// latest and its slowest sample).
    exemplars: Vec<Option<Exemplar>>,
}

/// Runs of this many empty buckets or more split a native histogram's span.
const SPAN_GAP: usize = 3;

/// Prometheus spans and deltas for OpenTelemetry buckets starting at index `offset`: one
/// span per run of buckets without a gap of [`SPAN_GAP`] empty ones, each count given as the
/// difference from the previous bucket's.
pub fn native_buckets(offset: i32, counts: &[u64]) -> (Vec<(i32, u32)>, Vec<i64>) {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut deltas = Vec::new();
    let mut prev = 0i64;
    // The index (Prometheus's) just past the last span's end.
    let mut end = 0i32;
    let mut i = 0;
    while i < counts.len() {
        if counts[i] == 0 {
            i += 1;
            continue;
        }
        // A run from i to the next gap of SPAN_GAP empty buckets (or the end), without its
        // trailing empty buckets.
        let mut j = i;
        let mut last = i;
        while j < counts.len() && j - last <= SPAN_GAP {
            if counts[j] > 0 {
                last = j;
            }
            j += 1;
        }
        let start = offset + i as i32 + 1;
        let gap = if spans.is_empty() { start } else { start - end };
        spans.push((gap, (last - i + 1) as u32));
        for &c in &counts[i..=last] {
            deltas.push(c as i64 - prev);
            prev = c as i64;
        }
        end = offset + last as i32 + 2;
        i = last + 1;
    }
    (spans, deltas)
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
                exp: None,
                exemplars: vec![None; f.buckets.len()],
            };
        }
        for ex in [f.latest, f.slowest].into_iter().flatten() {
            // Upper-inclusive, as the counts (the same division on both sides keeps the
            // order of a value and a bound in ms).
            let i = st.bounds.partition_point(|&ub| ub < ex.secs);
            st.exemplars[i] = Some(ex);
        }
        for (a, n) in st.counts.iter_mut().zip(&f.buckets) {
            *a += n;
        }
        st.sum += f.bucket_sum;
        let n = f.buckets.iter().sum::<u64>();
        st.count += n;
        let first = st.count == n;
        match (&mut st.exp, &f.exp) {
            (Some(a), Some(e)) => a.merge(e),
            (None, Some(e)) if first => st.exp = Some(e.clone()),
            // Intervals without an exponential histogram after ones with: the native
            // buckets would not hold every sample, so none are served from now on.
            (Some(_), None) => st.exp = None,
            _ => {}
        }
    }
}

impl CumHist {
    /// The exemplar of each classic bucket (the last one +Inf).
    pub fn exemplars(&self) -> Vec<Option<Exemplar>> {
        let st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        st.exemplars.clone()
    }
}

impl TypedMetric for CumHist {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CumHist {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // prometheus-client accumulates the counts and writes the last bound as +Inf.
        let buckets: Vec<(f64, u64)> = st
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(st.counts.iter().copied())
            .collect();
        let Some(exp) = &st.exp else {
            return encoder.encode_histogram::<NoLabelSet>(st.sum, st.count, &buckets, None);
        };
        let (offset, counts) = exp.trimmed();
        let (spans, deltas) = native_buckets(offset, counts);
        // The text formats write the classic buckets only.
        encoder.encode_histogram_with_native::<NoLabelSet>(
            st.sum,
            st.count,
            &buckets,
            None,
            NativeHistogram {
                schema: EXP_SCALE,
                zero_threshold: EXP_ZERO_THRESHOLD,
                zero_count: exp.zero_count,
                negative: NativeHistogramBuckets {
                    spans: &[],
                    deltas: &[],
                },
                positive: NativeHistogramBuckets {
                    spans: &spans,
                    deltas: &deltas,
                },
                created: None,
            },
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spans and deltas decoded back the way Prometheus reads them: every count at its
    /// Prometheus index, which is OpenTelemetry's plus one.
    fn decode(spans: &[(i32, u32)], deltas: &[i64]) -> Vec<(i32, u64)> {
        let mut out = Vec::new();
        let (mut idx, mut c, mut d) = (0i32, 0i64, deltas.iter());
        for (k, &(off, len)) in spans.iter().enumerate() {
            idx = if k == 0 { off } else { idx + off };
            for _ in 0..len {
                c += d.next().unwrap();
                out.push((idx, c as u64));
                idx += 1;
            }
        }
        assert!(d.next().is_none());
        out
    }

    #[test]
    fn native_buckets_are_otel_buckets_shifted_by_one() {
        let counts = [3, 0, 1, 0, 0, 0, 0, 2, 5, 0, 0, 1];
        let (spans, deltas) = native_buckets(-40, &counts);
        // A gap of 4 empty buckets splits; gaps of 1 and 2 do not.
        assert_eq!(spans, vec![(-39, 3), (4, 5)]);
        let want: Vec<(i32, u64)> = counts
            .iter()
            .enumerate()
            .map(|(k, &c)| (-40 + k as i32 + 1, c))
            .filter(|&(i, c)| c > 0 || (-39..=-37).contains(&i) || (-32..=-28).contains(&i))
            .collect();
        assert_eq!(decode(&spans, &deltas), want);
        assert_eq!(native_buckets(0, &[]), (vec![], vec![]));
        // A value's Prometheus bucket (base^(i-1), base^i] holds it.
        let base = 2f64.powf(2f64.powi(-EXP_SCALE));
        for v in [0.0123, 0.04, 1.0, 0.25] {
            let (spans, deltas) = native_buckets(ExpHist::index(v), &[1]);
            let i = decode(&spans, &deltas)[0].0;
            assert!(base.powi(i - 1) < v * (1.0 + 1e-12) && v <= base.powi(i) * (1.0 + 1e-12));
        }
    }
}
