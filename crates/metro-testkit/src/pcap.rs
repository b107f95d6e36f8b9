//! Capture writers: classic pcap ([`PcapWriter`], µs or ns, either byte order) and a
//! minimal pcapng ([`PcapNgWriter`]: SHB, IDB with `if_tsresol`/`if_tsoffset`, EPB, SPB),
//! for the generator and for tests that need captures with known contents.
//!
//! Writers do no buffering of their own: hand them a `BufWriter` (or a `Vec<u8>`).
//! Timestamps are nanoseconds since the Unix epoch, as everywhere in metro.

use std::io::{self, Write};

/// `flush`, `get_ref` and `into_inner` over a writer's `out` field, the same in both writers.
macro_rules! inner_writer_access {
    () => {
        pub fn flush(&mut self) -> io::Result<()> {
            self.out.flush()
        }

        pub fn get_ref(&self) -> &W {
            &self.out
        }

        /// Flushes and returns the inner writer.
        pub fn into_inner(mut self) -> io::Result<W> {
            self.out.flush()?;
            Ok(self.out)
        }
    };
}

/// Classic pcap magic as a native number; written in the chosen byte order.
const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;

/// Options of a classic pcap file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcapOptions {
    /// LINKTYPE_* value for every record.
    pub linktype: u32,
    /// Longest record data; longer packets are cut (orig_len keeps the full length).
    pub snaplen: u32,
    /// Nanosecond timestamps (magic a1b23c4d) instead of microseconds (a1b2c3d4).
    pub nanos: bool,
    /// Write big-endian headers (as a SPARC or PowerPC host would have).
    pub big_endian: bool,
}

impl Default for PcapOptions {
    fn default() -> Self {
        PcapOptions {
            linktype: 1,
            snaplen: 262_144,
            nanos: false,
            big_endian: false,
        }
    }
}

fn u16_bytes(v: u16, be: bool) -> [u8; 2] {
    if be { v.to_be_bytes() } else { v.to_le_bytes() }
}
fn u32_bytes(v: u32, be: bool) -> [u8; 4] {
    if be { v.to_be_bytes() } else { v.to_le_bytes() }
}

/// Writes a classic pcap file: the 24-byte file header on creation, then one 16-byte
/// record header plus data per packet.
pub struct PcapWriter<W: Write> {
    out: W,
    opts: PcapOptions,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header (version 2.4) and returns the writer.
    pub fn new(mut out: W, opts: PcapOptions) -> io::Result<Self> {
        let be = opts.big_endian;
        let mut hdr = [0u8; 24];
        let magic = if opts.nanos {
            MAGIC_NANOS
        } else {
            MAGIC_MICROS
        };
        hdr[0..4].copy_from_slice(&u32_bytes(magic, be));
        hdr[4..6].copy_from_slice(&u16_bytes(2, be));
        hdr[6..8].copy_from_slice(&u16_bytes(4, be));
        // thiszone and sigfigs stay 0.
        hdr[16..20].copy_from_slice(&u32_bytes(opts.snaplen, be));
        hdr[20..24].copy_from_slice(&u32_bytes(opts.linktype, be));
        out.write_all(&hdr)?;
        Ok(PcapWriter { out, opts })
    }

    /// Microsecond-resolution little-endian file with this link type and snaplen.
    pub fn micros(out: W, linktype: u32, snaplen: u32) -> io::Result<Self> {
        Self::new(
            out,
            PcapOptions {
                linktype,
                snaplen,
                nanos: false,
                big_endian: false,
            },
        )
    }

    /// Nanosecond-resolution little-endian file with this link type and snaplen.
    pub fn nanos(out: W, linktype: u32, snaplen: u32) -> io::Result<Self> {
        Self::new(
            out,
            PcapOptions {
                linktype,
                snaplen,
                nanos: true,
                big_endian: false,
            },
        )
    }

    pub fn options(&self) -> PcapOptions {
        self.opts
    }

    /// Writes one record. `data` longer than the snaplen is cut to it; `orig_len` is written
    /// as given (pass `data.len()` for an uncut packet). At µs resolution the timestamp is
    /// truncated towards negative infinity; times before 1970 or after 2106 wrap (the
    /// format's seconds field is an unsigned 32-bit number).
    pub fn write_packet(&mut self, ts_nanos: i64, data: &[u8], orig_len: u32) -> io::Result<()> {
        let be = self.opts.big_endian;
        let caplen = data.len().min(self.opts.snaplen as usize);
        let secs = ts_nanos.div_euclid(1_000_000_000) as u32;
        let sub = ts_nanos.rem_euclid(1_000_000_000) as u32;
        let frac = if self.opts.nanos { sub } else { sub / 1000 };
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&u32_bytes(secs, be));
        hdr[4..8].copy_from_slice(&u32_bytes(frac, be));
        hdr[8..12].copy_from_slice(&u32_bytes(caplen as u32, be));
        hdr[12..16].copy_from_slice(&u32_bytes(orig_len, be));
        self.out.write_all(&hdr)?;
        self.out.write_all(&data[..caplen])
    }

    inner_writer_access!();
}

/// One pcapng interface (an IDB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interface {
    pub linktype: u16,
    /// 0 means "no limit" in pcapng.
    pub snaplen: u32,
    /// The raw `if_tsresol` byte: 6 = µs (the default), 9 = ns; with the top bit set the
    /// rest is a power of 2 (0x8a = 1/1024 s). `None` writes no option (µs).
    pub tsresol: Option<u8>,
    /// `if_tsoffset`: seconds added to every timestamp of the interface.
    pub tsoffset: i64,
}

impl Interface {
    pub fn new(linktype: u16, snaplen: u32) -> Interface {
        Interface {
            linktype,
            snaplen,
            tsresol: None,
            tsoffset: 0,
        }
    }
    pub fn tsresol(mut self, tsresol: u8) -> Interface {
        self.tsresol = Some(tsresol);
        self
    }
    pub fn tsoffset(mut self, seconds: i64) -> Interface {
        self.tsoffset = seconds;
        self
    }

    /// Converts ns since the epoch into this interface's timestamp units.
    fn units(&self, ts_nanos: i64) -> u64 {
        let t = i128::from(ts_nanos) - i128::from(self.tsoffset) * 1_000_000_000;
        let r = self.tsresol.unwrap_or(6);
        let units = if r & 0x80 != 0 {
            (t << (r & 0x7f)).div_euclid(1_000_000_000)
        } else {
            let p = 10i128.pow(u32::from(r.min(30)));
            if p >= 1_000_000_000 {
                t * (p / 1_000_000_000)
            } else {
                t.div_euclid(1_000_000_000 / p)
            }
        };
        units as u64
    }
}

/// Writes a pcapng stream: a Section Header Block on creation, then Interface Description
/// Blocks as interfaces are added and Enhanced (or Simple) Packet Blocks.
pub struct PcapNgWriter<W: Write> {
    out: W,
    big_endian: bool,
    interfaces: Vec<Interface>,
    block: Vec<u8>,
}

const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const SPB: u32 = 3;
const EPB: u32 = 6;

impl<W: Write> PcapNgWriter<W> {
    /// Writes the first Section Header Block (version 1.0, section length unknown).
    pub fn new(out: W, big_endian: bool) -> io::Result<Self> {
        let mut w = PcapNgWriter {
            out,
            big_endian,
            interfaces: Vec::new(),
            block: Vec::new(),
        };
        w.section(big_endian)?;
        Ok(w)
    }

    /// Starts a new section (possibly in the other byte order); interfaces are forgotten.
    pub fn section(&mut self, big_endian: bool) -> io::Result<()> {
        self.big_endian = big_endian;
        self.interfaces.clear();
        let be = big_endian;
        let mut body = Vec::with_capacity(16);
        body.extend_from_slice(&u32_bytes(0x1a2b_3c4d, be));
        body.extend_from_slice(&u16_bytes(1, be));
        body.extend_from_slice(&u16_bytes(0, be));
        body.extend_from_slice(&u32_bytes(u32::MAX, be));
        body.extend_from_slice(&u32_bytes(u32::MAX, be));
        self.write_block(SHB, &body)
    }

    /// Writes an IDB and returns the interface id to pass to [`write_packet`](Self::write_packet).
    pub fn add_interface(&mut self, iface: Interface) -> io::Result<u32> {
        let be = self.big_endian;
        let mut body = Vec::with_capacity(40);
        body.extend_from_slice(&u16_bytes(iface.linktype, be));
        body.extend_from_slice(&u16_bytes(0, be));
        body.extend_from_slice(&u32_bytes(iface.snaplen, be));
        if let Some(r) = iface.tsresol {
            body.extend_from_slice(&u16_bytes(9, be));
            body.extend_from_slice(&u16_bytes(1, be));
            body.extend_from_slice(&[r, 0, 0, 0]);
        }
        if iface.tsoffset != 0 {
            body.extend_from_slice(&u16_bytes(14, be));
            body.extend_from_slice(&u16_bytes(8, be));
            let off = iface.tsoffset as u64;
            body.extend_from_slice(&if be {
                off.to_be_bytes()
            } else {
                off.to_le_bytes()
            });
        }
        if iface.tsresol.is_some() || iface.tsoffset != 0 {
            body.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
        }
        self.write_block(IDB, &body)?;
        self.interfaces.push(iface);
        Ok(self.interfaces.len() as u32 - 1)
    }

    /// Writes an Enhanced Packet Block. `data` longer than a non-zero snaplen is cut.
    ///
    /// # Panics
    /// If `interface` was not returned by [`add_interface`](Self::add_interface) in this section.
    pub fn write_packet(
        &mut self,
        interface: u32,
        ts_nanos: i64,
        data: &[u8],
        orig_len: u32,
    ) -> io::Result<()> {
        let iface = self.interfaces[interface as usize];
        let be = self.big_endian;
        let caplen = if iface.snaplen == 0 {
            data.len()
        } else {
            data.len().min(iface.snaplen as usize)
        };
        let units = iface.units(ts_nanos);
        let mut body = std::mem::take(&mut self.block);
        body.clear();
        body.extend_from_slice(&u32_bytes(interface, be));
        body.extend_from_slice(&u32_bytes((units >> 32) as u32, be));
        body.extend_from_slice(&u32_bytes(units as u32, be));
        body.extend_from_slice(&u32_bytes(caplen as u32, be));
        body.extend_from_slice(&u32_bytes(orig_len, be));
        body.extend_from_slice(&data[..caplen]);
        let r = self.write_block(EPB, &body);
        self.block = body;
        r
    }

    /// Writes a Simple Packet Block (interface 0, no timestamp). `data` is written whole:
    /// a reader cuts it to interface 0's snaplen.
    pub fn write_simple_packet(&mut self, data: &[u8], orig_len: u32) -> io::Result<()> {
        let mut body = std::mem::take(&mut self.block);
        body.clear();
        body.extend_from_slice(&u32_bytes(orig_len, self.big_endian));
        body.extend_from_slice(data);
        let r = self.write_block(SPB, &body);
        self.block = body;
        r
    }

    /// Writes any block: type, total length, `body` padded to 4 bytes, total length again.
    pub fn write_block(&mut self, block_type: u32, body: &[u8]) -> io::Result<()> {
        let be = self.big_endian;
        let pad = (4 - body.len() % 4) % 4;
        let total = (12 + body.len() + pad) as u32;
        self.out.write_all(&u32_bytes(block_type, be))?;
        self.out.write_all(&u32_bytes(total, be))?;
        self.out.write_all(body)?;
        self.out.write_all(&[0u8; 3][..pad])?;
        self.out.write_all(&u32_bytes(total, be))
    }

    inner_writer_access!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_header_and_record_bytes() {
        let mut w = PcapWriter::micros(Vec::new(), 1, 4).unwrap();
        w.write_packet(1_700_000_000_123_456_789, &[1, 2, 3, 4, 5, 6], 6)
            .unwrap();
        let b = w.into_inner().unwrap();
        assert_eq!(&b[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&b[4..8], &[2, 0, 4, 0]);
        assert_eq!(&b[8..16], &[0; 8]);
        assert_eq!(&b[16..20], &4u32.to_le_bytes());
        assert_eq!(&b[20..24], &1u32.to_le_bytes());
        assert_eq!(&b[24..28], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&b[28..32], &123_456u32.to_le_bytes());
        assert_eq!(&b[32..36], &4u32.to_le_bytes(), "caplen cut to snaplen");
        assert_eq!(&b[36..40], &6u32.to_le_bytes());
        assert_eq!(&b[40..], &[1, 2, 3, 4]);
    }

    #[test]
    fn pcap_big_endian_nanos() {
        let opts = PcapOptions {
            linktype: 101,
            snaplen: 65535,
            nanos: true,
            big_endian: true,
        };
        let mut w = PcapWriter::new(Vec::new(), opts).unwrap();
        w.write_packet(-1, &[9], 1).unwrap();
        let b = w.into_inner().unwrap();
        assert_eq!(&b[0..4], &[0xa1, 0xb2, 0x3c, 0x4d]);
        assert_eq!(&b[4..8], &[0, 2, 0, 4]);
        assert_eq!(&b[20..24], &[0, 0, 0, 101]);
        assert_eq!(
            &b[24..28],
            &u32::MAX.to_be_bytes(),
            "-1 ns is second -1 ..."
        );
        assert_eq!(
            &b[28..32],
            &999_999_999u32.to_be_bytes(),
            "... plus 999999999 ns"
        );
    }

    #[test]
    fn pcapng_blocks() {
        let mut w = PcapNgWriter::new(Vec::new(), false).unwrap();
        let id = w.add_interface(Interface::new(1, 0).tsresol(9)).unwrap();
        w.write_packet(id, 5_000_000_007, &[0xab; 5], 60).unwrap();
        let b = w.into_inner().unwrap();
        assert_eq!(&b[0..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
        assert_eq!(&b[4..8], &28u32.to_le_bytes());
        assert_eq!(&b[8..12], &[0x4d, 0x3c, 0x2b, 0x1a]);
        let idb = &b[28..];
        assert_eq!(&idb[0..4], &1u32.to_le_bytes());
        assert_eq!(&idb[4..8], &32u32.to_le_bytes());
        assert_eq!(&idb[16..24], &[9, 0, 1, 0, 9, 0, 0, 0]);
        let epb = &b[60..];
        assert_eq!(&epb[0..4], &6u32.to_le_bytes());
        assert_eq!(&epb[4..8], &40u32.to_le_bytes());
        assert_eq!(&epb[12..16], &1u32.to_le_bytes(), "ts high");
        assert_eq!(
            &epb[16..20],
            &705_032_711u32.to_le_bytes(),
            "ts low: 5000000007 - 2^32"
        );
        assert_eq!(&epb[20..24], &5u32.to_le_bytes());
        assert_eq!(&epb[24..28], &60u32.to_le_bytes());
        assert_eq!(&epb[28..36], &[0xab, 0xab, 0xab, 0xab, 0xab, 0, 0, 0]);
        assert_eq!(&epb[36..40], &40u32.to_le_bytes());
        assert_eq!(b.len(), 100);
    }

    #[test]
    fn tsresol_units() {
        assert_eq!(Interface::new(1, 0).units(1_500_000_000), 1_500_000);
        assert_eq!(
            Interface::new(1, 0).tsresol(0x8a).units(1_500_000_000),
            1536
        );
        assert_eq!(Interface::new(1, 0).tsresol(0).units(1_500_000_000), 1);
        assert_eq!(Interface::new(1, 0).tsresol(12).units(2), 2000);
        assert_eq!(
            Interface::new(1, 0).tsoffset(1).units(1_500_000_000),
            500_000
        );
    }
}
