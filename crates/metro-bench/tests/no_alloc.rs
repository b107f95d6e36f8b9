//! No per-packet heap allocation on the hot path (issue 4): a counting global allocator
//! around reader + decode + engine. After a warm-up that creates every flow and grows its
//! queues, a steady-state window of 100,000 packets over those same flows must allocate
//! (almost) nothing: O(flows) at most, never O(packets).
//!
//! One test per file: the counter is process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use metro::pcap::CaptureReader;
use metro_core::config::EngineConfig;
use metro_core::engine::Engine;
use metro_core::sample::Sample;
use metro_testkit::generator::{GenConfig, write_capture};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size() as u64, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size() as u64, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new as u64, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FLOWS: u32 = 2_000;
const WARMUP: u64 = 300_000;
const WINDOW: u64 = 100_000;

#[test]
fn steady_state_allocates_nothing_per_packet() {
    // Long-lived connections only (no churn): after the warm-up no flow is created.
    let cfg = GenConfig {
        seed: 11,
        packets: WARMUP + 2 * WINDOW,
        connections: FLOWS,
        churn: false,
        midstream: 0.0,
        ramp_us: 10_000,
        ..GenConfig::default()
    };
    let mut pcap = Vec::new();
    write_capture(&cfg, &mut pcap).unwrap();

    let mut reader = CaptureReader::from_reader(Box::new(Cursor::new(pcap))).unwrap();
    let mut engine = Engine::new(EngineConfig::default());
    let mut samples = 0u64;
    let mut observer = |_: &Sample| samples += 1;
    let mut frame = 0u64;
    let mut windows = Vec::new();
    let mut start = (0, 0, 0);
    let mut next_tick = i64::MIN;
    while let Some(rec) = reader.next_record().unwrap() {
        frame += 1;
        if frame == WARMUP + 1 || frame == WARMUP + WINDOW + 1 {
            start = (
                ALLOCS.load(Relaxed),
                BYTES.load(Relaxed),
                engine.counters().flows_created,
            );
        }
        if let Ok(seg) = metro_core::Segment::decode(rec.linktype, rec.data) {
            if rec.ts >= next_tick {
                engine.tick(rec.ts);
                next_tick = rec.ts + 1_000_000_000;
            }
            engine.process(frame, rec.ts, &seg, &mut observer);
        }
        if frame == WARMUP + WINDOW || frame == WARMUP + 2 * WINDOW {
            windows.push((
                ALLOCS.load(Relaxed) - start.0,
                BYTES.load(Relaxed) - start.1,
                engine.counters().flows_created - start.2,
            ));
        }
    }
    assert_eq!(frame, cfg.packets);
    let c = engine.counters();
    eprintln!(
        "flows {} samples {samples} packets {}; per {WINDOW}-packet window (allocations, bytes, flows created): {windows:?}",
        engine.active_flows(),
        c.packets
    );
    assert_eq!(c.packets, cfg.packets, "every generated frame decodes");
    assert!(
        samples > WINDOW / 10,
        "the engine produced only {samples} samples"
    );
    for (allocs, bytes, created) in windows {
        assert_eq!(created, 0, "flows were created in the steady-state window");
        // A per-packet allocation would be >= 100,000 here. Allow a little O(flows) growth
        // (a pending queue that first fills up late), nothing more.
        assert!(
            allocs <= u64::from(FLOWS) / 20,
            "{allocs} allocations ({bytes} bytes) during {WINDOW} steady-state packets over {FLOWS} flows"
        );
    }
}
