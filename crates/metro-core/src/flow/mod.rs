//! The connection table: a canonical key per TCP connection (both directions share one
//! entry), bounded, with expiry on packet time.
