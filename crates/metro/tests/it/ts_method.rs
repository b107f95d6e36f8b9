//! The `ts` method against the `seq` method on a real bulk upload with TCP timestamps
//! (go-metro's own fixture, bundled as examples/scp-upload.pcap): where one ACK closes both a
//! ts and a seq sample, they must agree within one tick of the sender's timestamp clock when
//! both openers carried the same TSval, and within the TSval difference plus one tick when the
//! receiver echoed an older segment's TSval (RFC 7323's rule for delayed ACKs).

use std::collections::HashMap;
use std::path::Path;

use metro::pcap::CaptureReader;
use metro_core::config::EngineConfig;
use metro_core::wire;
use serde_json::Value;

#[test]
fn ts_samples_within_one_tick_of_seq_samples_on_scp_upload() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scp-upload.pcap");

    // Every frame's time and TSval, read independently of the engine.
    let mut frames: Vec<(i64, Option<u32>)> = vec![(0, None)]; // 1-based
    let mut r = CaptureReader::open(&path).unwrap();
    while let Some(rec) = r.next_record().unwrap() {
        let tsval = wire::decode(rec.linktype, rec.data)
            .ok()
            .and_then(|p| p.tcp.options.timestamp)
            .map(|t| t.0);
        frames.push((rec.ts, tsval));
    }
    // The sender's timestamp clock rate, from the first and last TSval of the uploader.
    let with_ts: Vec<(i64, u32)> = frames
        .iter()
        .filter_map(|(t, v)| v.map(|v| (*t, v)))
        .collect();
    let (t0, v0) = with_ts[0];
    let (t1, v1) = *with_ts.last().unwrap();
    let hz = v1.wrapping_sub(v0) as f64 / ((t1 - t0) as f64 / 1e9);
    assert!((900.0..1100.0).contains(&hz), "timestamp clock {hz} Hz");
    let tick_ms = 1000.0 / hz;

    let mut out = Vec::new();
    metro::analyze::analyze_files(
        std::slice::from_ref(&path),
        &EngineConfig::default(),
        false,
        Some(&mut out),
        false,
    )
    .unwrap();
    let mut by_frame: HashMap<u64, HashMap<String, (u64, f64)>> = HashMap::new();
    for l in String::from_utf8(out).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        by_frame
            .entry(v["frame"].as_u64().unwrap())
            .or_default()
            .insert(
                v["kind"].as_str().unwrap().to_string(),
                (
                    v["open_frame"].as_u64().unwrap(),
                    v["rtt_ms"].as_f64().unwrap(),
                ),
            );
    }
    let ts_total = by_frame.values().filter(|m| m.contains_key("ts")).count();
    assert!(ts_total >= 60, "only {ts_total} ts samples");
    let (mut same, mut older) = (0, 0);
    for (frame, m) in &by_frame {
        let (Some(&(ts_open, ts_rtt)), Some(&(seq_open, seq_rtt))) = (m.get("ts"), m.get("seq"))
        else {
            continue;
        };
        let v_ts = frames[ts_open as usize].1.unwrap();
        let v_seq = frames[seq_open as usize].1.unwrap();
        let diff = (ts_rtt - seq_rtt).abs();
        if v_ts == v_seq {
            same += 1;
            assert!(
                diff <= tick_ms,
                "frame {frame}: ts {ts_rtt} ms vs seq {seq_rtt} ms, same TSval, > 1 tick"
            );
        } else {
            older += 1;
            let ticks = v_seq.wrapping_sub(v_ts);
            assert!(
                ticks < 100,
                "frame {frame}: ts opener not older than seq opener"
            );
            assert!(
                ts_rtt >= seq_rtt && diff <= (ticks + 1) as f64 * tick_ms,
                "frame {frame}: ts {ts_rtt} ms vs seq {seq_rtt} ms, {ticks} ticks apart"
            );
        }
    }
    assert!(same >= 50, "only {same} ts/seq pairs with the same TSval");
    assert!(older <= same / 10, "{older} pairs echo an older TSval");
}
