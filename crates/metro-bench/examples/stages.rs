//! The replay's first two stages alone, for instruction counts under callgrind (one process
//! per stage, nothing else in it): `stages read FILE` (every record, its first byte
//! touched) and `stages decode FILE` (every record decoded to a `Segment` and its payload,
//! as `metro analyze` decodes). Subtract the `read` run from the `decode` run for the
//! decoder alone.
//!
//! `valgrind --tool=callgrind cargo run --release --example stages -- decode FILE`

use std::hint::black_box;
use std::path::Path;

use metro::pcap::CaptureReader;
use metro_core::proto;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [stage, file] = &args[..] else {
        anyhow::bail!("usage: stages read|decode FILE");
    };
    let mut r = CaptureReader::open(Path::new(file))?;
    let mut n = 0u64;
    let mut sum = 0u64;
    match stage.as_str() {
        "read" => {
            while let Some(rec) = r.next_record()? {
                sum = sum.wrapping_add(u64::from(rec.data.first().copied().unwrap_or(0)));
                n += 1;
            }
        }
        "decode" => {
            while let Some(rec) = r.next_record()? {
                if let Ok((seg, payload)) = proto::decode_tcp(rec.linktype, rec.data) {
                    black_box((&seg, payload));
                    sum = sum.wrapping_add(u64::from(seg.sport));
                }
                n += 1;
            }
        }
        _ => anyhow::bail!("usage: stages read|decode FILE"),
    }
    black_box(sum);
    println!("{n} records");
    Ok(())
}
