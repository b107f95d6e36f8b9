//! Fuzzes `metro_core::wire::decode`: every input is decoded as a frame of each LINKTYPE
//! metro supports (and one it does not). Nothing may panic, and a decoded segment must hold
//! together: its captured payload within the frame and no longer than the declared length;
//! and `decode`'s shortcut for the common shape agrees with `decode_general`.
//!
//! Run with `cargo +nightly fuzz run decode` from this directory.

#![no_main]

use libfuzzer_sys::fuzz_target;
use metro_core::wire::{decode, decode_general, linktype};

/// An unassigned LINKTYPE, to exercise the refusal path.
const UNSUPPORTED: u32 = 147;

fuzz_target!(|frame: &[u8]| {
    for &lt in linktype::SUPPORTED.iter().chain(&[UNSUPPORTED]) {
        let general = decode_general(lt, frame);
        assert_eq!(format!("{:?}", decode(lt, frame)), format!("{general:?}"));
        let Ok(p) = decode(lt, frame) else { continue };
        assert!(p.payload.len() <= p.payload_len as usize);
        assert!((20..=60).contains(&p.tcp.header_len));
        assert!(p.tcp.options.sack_count <= 4);
        let f = frame.as_ptr_range();
        let q = p.payload.as_ptr_range();
        assert!(p.payload.is_empty() || (f.start <= q.start && q.end <= f.end));
    }
});
