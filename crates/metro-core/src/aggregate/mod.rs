//! Folding samples into per-responder and per-flow statistics: count, min, max, mean,
//! go-metro's jitter, and quantiles from a DDSketch (1% relative error, mergeable).
