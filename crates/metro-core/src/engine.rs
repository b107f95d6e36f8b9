//! The engine: `process(frame, ts, packet)` per decoded TCP segment, `tick(ts)` for expiry.
