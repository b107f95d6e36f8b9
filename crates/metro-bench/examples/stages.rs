//! The replay's first two stages alone, for instruction counts under callgrind (one process
//! per stage, nothing else in it): `stages read FILE` (every record, its first byte
//! touched), `stages decode FILE` (every record decoded to a `Segment` and its payload by
//! `proto::decode_tcp`) and `stages replay FILE` (`metro analyze`'s replay loop, reader and
//! decoder, handing each segment to nothing). Subtract the `read` run from the others for
//! the decoder alone.
//!
//! `valgrind --tool=callgrind cargo run --release --example stages -- decode FILE`

use std::hint::black_box;
use std::path::Path;

use std::ops::ControlFlow;

use metro::pcap::CaptureReader;
use metro::replay::{Frames, replay};
use metro_core::{Nanos, Segment, proto};

/// Takes each segment and does nothing with it.
struct Nowhere(u64);

impl Frames for Nowhere {
    #[inline]
    fn segment(&mut self, frame: u64, _: Nanos, seg: &Segment, payload: &[u8]) -> ControlFlow<()> {
        black_box((seg, payload));
        self.0 = self.0.wrapping_add(frame);
        ControlFlow::Continue(())
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [stage, file] = &args[..] else {
        anyhow::bail!("usage: stages read|decode|replay FILE");
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
        "replay" => {
            let mut to = Nowhere(0);
            n = replay(&mut r, &mut to).records;
            sum = to.0;
        }
        _ => anyhow::bail!("usage: stages read|decode|replay FILE"),
    }
    black_box(sum);
    println!("{n} records");
    Ok(())
}
