//! Tunnel headers between an outer IP header and what it encloses.
//!
//! Owns GRE (RFC 2784/2890 optional fields, RFC 1701 source routes, PPTP's enhanced GRE)
//! with what GRE carries beyond plain EtherTypes (ERSPAN types I, II and III, Aruba's
//! 802.11-in-GRE), and the UDP tunnels recognised by port: VXLAN (4789, and Linux's old
//! 8472), VXLAN-GPE (4790), Geneve (6081), GTP-U (2152, and any port where the payload is
//! unmistakably a GTPv1-U G-PDU), Teredo (3544), AYIYA (5072) and L2TPv2 (1701).
//!
//! Each function returns the link-level `Next` step; `ip.rs` resolves it and counts the
//! tunnel level. UDP on any other port, or a tunnel message that carries no user packet
//! (GTP echo, AYIYA heartbeat, ...), is [`DecodeError::NotTcp`].

use super::link::{Net, Next, ethertype};
use super::{DecodeError, Layer};

/// UDP ports of the tunnels metro follows.
pub mod port {
    pub const VXLAN: u16 = 4789;
    pub const VXLAN_LINUX: u16 = 8472;
    pub const VXLAN_GPE: u16 = 4790;
    pub const GENEVE: u16 = 6081;
    pub const GTP_U: u16 = 2152;
    pub const TEREDO: u16 = 3544;
    pub const AYIYA: u16 = 5072;
    pub const L2TP: u16 = 1701;
}

/// GRE protocol types beyond the EtherTypes `link.rs` knows.
mod gre_proto {
    pub const ERSPAN_2: u16 = 0x88BE;
    pub const ERSPAN_3: u16 = 0x22EB;
    /// Aruba access points tunnel raw 802.11 frames with protocol types 0x8200..=0x83FF.
    pub const ARUBA_FIRST: u16 = 0x8200;
    pub const ARUBA_LAST: u16 = 0x83FF;
}

const TRUNC_GRE: DecodeError = DecodeError::Truncated(Layer::Gre);
const TRUNC_TUNNEL: DecodeError = DecodeError::Truncated(Layer::Tunnel);

/// Upper bound on RFC 1701 source route entries and GTP extension headers.
const MAX_CHAIN: usize = 16;

/// A GRE header and what it carries.
pub(super) fn gre(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    const C: u16 = 0x8000;
    const R: u16 = 0x4000;
    const K: u16 = 0x2000;
    const S: u16 = 0x1000;
    const A: u16 = 0x0080; // PPTP acknowledgment number present
    let [f0, f1, p0, p1, ref rest @ ..] = *b else {
        return Err(TRUNC_GRE);
    };
    let flags = u16::from_be_bytes([f0, f1]);
    let proto = u16::from_be_bytes([p0, p1]);
    let optional = match flags & 0x7 {
        0 => {
            4 * (usize::from(flags & (C | R) != 0)
                + usize::from(flags & K != 0)
                + usize::from(flags & S != 0))
        }
        // PPTP: the key (payload length, call id) is always there.
        1 if proto == ethertype::PPP => {
            4 * (1 + usize::from(flags & S != 0) + usize::from(flags & A != 0))
        }
        _ => return Err(DecodeError::Malformed(Layer::Gre)),
    };
    let mut payload = rest.get(optional..).ok_or(TRUNC_GRE)?;
    if flags & 0x7 == 0 && flags & R != 0 {
        payload = source_routes(payload)?;
    }
    Ok(match proto {
        gre_proto::ERSPAN_2 if flags & S != 0 => {
            // ERSPAN type II: an 8-byte header. Without a sequence number it is type I,
            // which has no header at all.
            Next::Ethernet(payload.get(8..).ok_or(TRUNC_TUNNEL)?)
        }
        gre_proto::ERSPAN_2 => Next::Ethernet(payload),
        gre_proto::ERSPAN_3 => erspan3(payload)?,
        gre_proto::ARUBA_FIRST..=gre_proto::ARUBA_LAST => Next::Wifi(payload, false),
        _ => Next::EtherType(proto, payload),
    })
}

/// RFC 1701 source route entries: address family, offset, length, routing data; a null
/// entry (family 0, length 0) ends the list.
fn source_routes(mut b: &[u8]) -> Result<&[u8], DecodeError> {
    for _ in 0..MAX_CHAIN {
        let [a0, a1, _offset, len, ref rest @ ..] = *b else {
            return Err(TRUNC_GRE);
        };
        if a0 == 0 && a1 == 0 && len == 0 {
            return Ok(rest);
        }
        b = rest.get(usize::from(len)..).ok_or(TRUNC_GRE)?;
    }
    Err(DecodeError::Malformed(Layer::Gre))
}

/// ERSPAN type III: a 12-byte header, an 8-byte platform sub-header if the O bit is set, then
/// an Ethernet frame (frame type 0) or an IP packet (frame type 2).
fn erspan3(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let (h, rest) = b.split_first_chunk::<12>().ok_or(TRUNC_TUNNEL)?;
    let word = u16::from_be_bytes([h[10], h[11]]);
    let rest = if word & 0x1 != 0 {
        rest.get(8..).ok_or(TRUNC_TUNNEL)?
    } else {
        rest
    };
    match (word >> 10) & 0x1F {
        0 => Ok(Next::Ethernet(rest)),
        2 => Ok(Next::Guess(rest)),
        _ => Err(DecodeError::NotTcp),
    }
}

/// A UDP header and the tunnel it carries, recognised by destination port, then source
/// port, then (for GTP-U only) by content.
pub(super) fn udp(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let (h, rest) = b
        .split_first_chunk::<8>()
        .ok_or(DecodeError::Truncated(Layer::Udp))?;
    let sport = u16::from_be_bytes([h[0], h[1]]);
    let dport = u16::from_be_bytes([h[2], h[3]]);
    let ulen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    // The UDP length bounds the payload, unless it is 0 (jumbogram) or too small to be true.
    let payload = match ulen.checked_sub(8) {
        Some(n) => rest.get(..n).unwrap_or(rest),
        None => rest,
    };
    let kind = match by_port(dport).or_else(|| by_port(sport)) {
        Some(k) => k,
        None if looks_like_gtp_u(payload) => Encap::GtpU,
        None => return Err(DecodeError::NotTcp),
    };
    match kind {
        Encap::Vxlan => vxlan(payload),
        Encap::VxlanGpe => vxlan_gpe(payload),
        Encap::Geneve => geneve(payload),
        Encap::GtpU => gtp_u(payload),
        Encap::Teredo => teredo(payload),
        Encap::Ayiya => ayiya(payload),
        Encap::L2tp => l2tp(payload),
    }
}

#[derive(Clone, Copy)]
enum Encap {
    Vxlan,
    VxlanGpe,
    Geneve,
    GtpU,
    Teredo,
    Ayiya,
    L2tp,
}

#[inline]
fn by_port(p: u16) -> Option<Encap> {
    Some(match p {
        port::VXLAN | port::VXLAN_LINUX => Encap::Vxlan,
        port::VXLAN_GPE => Encap::VxlanGpe,
        port::GENEVE => Encap::Geneve,
        port::GTP_U => Encap::GtpU,
        port::TEREDO => Encap::Teredo,
        port::AYIYA => Encap::Ayiya,
        port::L2TP => Encap::L2tp,
        _ => return None,
    })
}

/// VXLAN (RFC 7348): flags with the I bit, reserved, VNI, reserved; then Ethernet.
fn vxlan(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    match *b {
        [flags, _, _, _, _, _, _, _, ref rest @ ..] if flags & 0x08 != 0 => {
            Ok(Next::Ethernet(rest))
        }
        [_, _, _, _, _, _, _, _, ..] => Err(DecodeError::NotTcp),
        _ => Err(TRUNC_TUNNEL),
    }
}

/// VXLAN-GPE: like VXLAN, with a next-protocol byte when the P bit is set.
fn vxlan_gpe(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let [flags, _, _, next, _, _, _, _, ref rest @ ..] = *b else {
        return Err(TRUNC_TUNNEL);
    };
    if flags & 0x04 == 0 {
        return Ok(Next::Ethernet(rest));
    }
    match next {
        1 => Ok(Next::Ip(Net::Ipv4, rest)),
        2 => Ok(Next::Ip(Net::Ipv6, rest)),
        3 => Ok(Next::Ethernet(rest)),
        5 => Ok(Next::Mpls(rest)),
        _ => Err(DecodeError::NotTcp),
    }
}

/// Geneve (RFC 8926): version and option length (in 4-byte words), flags, protocol type,
/// VNI; options; then a frame of that protocol type (usually 0x6558, Ethernet).
fn geneve(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let [vo, _, p0, p1, _, _, _, _, ref rest @ ..] = *b else {
        return Err(TRUNC_TUNNEL);
    };
    if vo >> 6 != 0 {
        return Err(DecodeError::NotTcp);
    }
    let inner = rest.get(usize::from(vo & 0x3F) * 4..).ok_or(TRUNC_TUNNEL)?;
    Ok(Next::EtherType(u16::from_be_bytes([p0, p1]), inner))
}

/// Whether a UDP payload on an unknown port is certainly a GTPv1-U G-PDU: version 1, PT 1,
/// message type 255, and a length field that matches the payload exactly.
fn looks_like_gtp_u(b: &[u8]) -> bool {
    match *b {
        [flags, 0xFF, l0, l1, _, _, _, _, ref rest @ ..] => {
            flags & 0xF8 == 0x30 && usize::from(u16::from_be_bytes([l0, l1])) == rest.len()
        }
        _ => false,
    }
}

/// GTPv1-U (3GPP TS 29.281): flags, message type, length, TEID; sequence number, N-PDU
/// number and next extension type if any of E/S/PN is set; extension headers; then the
/// user's IP packet. Only G-PDUs (message type 255) carry one.
fn gtp_u(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let [flags, msg, _, _, _, _, _, _, ref rest @ ..] = *b else {
        return Err(TRUNC_TUNNEL);
    };
    if flags >> 5 != 1 || flags & 0x10 == 0 || msg != 0xFF {
        return Err(DecodeError::NotTcp);
    }
    let mut rest = rest;
    if flags & 0x07 != 0 {
        let [_, _, _, mut next, ref r @ ..] = *rest else {
            return Err(TRUNC_TUNNEL);
        };
        rest = r;
        for _ in 0..MAX_CHAIN {
            if next == 0 {
                break;
            }
            // Length in 4-byte units, content, next extension type in the last byte.
            let len = usize::from(*rest.first().ok_or(TRUNC_TUNNEL)?) * 4;
            if len == 0 {
                return Err(DecodeError::Malformed(Layer::Tunnel));
            }
            let ext = rest.get(..len).ok_or(TRUNC_TUNNEL)?;
            next = ext.last().copied().unwrap_or_default();
            rest = rest.get(len..).unwrap_or_default();
        }
        if next != 0 {
            return Err(DecodeError::TooDeep);
        }
    }
    Ok(Next::Guess(rest))
}

/// Teredo (RFC 4380): an optional authentication indicator and an optional origin
/// indication, then an IPv6 packet.
fn teredo(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let mut b = b;
    if let [0x00, 0x01, id_len, auth_len, ref rest @ ..] = *b {
        // Client identifier, authentication value, 8-byte nonce, confirmation byte.
        b = rest
            .get(usize::from(id_len) + usize::from(auth_len) + 9..)
            .ok_or(TRUNC_TUNNEL)?;
    }
    if let [0x00, 0x00, _, _, _, _, _, _, ref rest @ ..] = *b {
        b = rest;
    }
    match b.first() {
        Some(v) if v >> 4 == 6 => Ok(Next::Ip(Net::Ipv6, b)),
        Some(_) => Err(DecodeError::NotTcp),
        None => Err(TRUNC_TUNNEL),
    }
}

/// AYIYA: identity length (log2) and type, signature length (in 4-byte words) and hash,
/// authentication method and opcode, next header, epoch time; identity; signature; then
/// the packet if the opcode is 1 (forward).
fn ayiya(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let [id, sig, op, next, _, _, _, _, ref rest @ ..] = *b else {
        return Err(TRUNC_TUNNEL);
    };
    if op & 0x0F != 1 {
        return Err(DecodeError::NotTcp);
    }
    let skip = (1usize << (id >> 4)) + usize::from(sig >> 4) * 4;
    let inner = rest.get(skip..).ok_or(TRUNC_TUNNEL)?;
    match next {
        4 => Ok(Next::Ip(Net::Ipv4, inner)),
        41 => Ok(Next::Ip(Net::Ipv6, inner)),
        _ => Err(DecodeError::NotTcp),
    }
}

/// L2TPv2 (RFC 2661) data messages: flags and version 2, optional length, tunnel and
/// session ids, optional Ns/Nr, optional offset size and padding; then a PPP frame.
/// Control messages and L2TPv3 carry no user packet metro reads.
fn l2tp(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    const T: u16 = 0x8000;
    const L: u16 = 0x4000;
    const S: u16 = 0x0800;
    const O: u16 = 0x0200;
    let [f0, f1, ref rest @ ..] = *b else {
        return Err(TRUNC_TUNNEL);
    };
    let flags = u16::from_be_bytes([f0, f1]);
    if flags & 0x000F != 2 || flags & T != 0 {
        return Err(DecodeError::NotTcp);
    }
    let fixed = 4 + 2 * usize::from(flags & L != 0) + 4 * usize::from(flags & S != 0);
    let mut rest = rest.get(fixed..).ok_or(TRUNC_TUNNEL)?;
    if flags & O != 0 {
        let [o0, o1, ref r @ ..] = *rest else {
            return Err(TRUNC_TUNNEL);
        };
        rest = r
            .get(usize::from(u16::from_be_bytes([o0, o1]))..)
            .ok_or(TRUNC_TUNNEL)?;
    }
    Ok(Next::Ppp(rest, false))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{
        cat, check, eth, eth_v4_tcp, ipv4, ipv6, outer4, outer6, tcp, udp,
    };
    use super::super::{DecodeError, Layer, Packet, decode, linktype as lt};

    fn over_gre(gre: &[u8], inner: &[u8]) -> Vec<u8> {
        eth(0x0800, &outer4(47, &cat(&[gre, inner])))
    }
    fn over_udp(sport: u16, dport: u16, tunnel: &[u8], inner: &[u8]) -> Vec<u8> {
        eth(
            0x0800,
            &outer4(17, &udp(sport, dport, &cat(&[tunnel, inner]))),
        )
    }
    fn dec(f: &[u8]) -> Result<Packet<'_>, DecodeError> {
        decode(lt::ETHERNET, f)
    }

    #[test]
    fn gre_plain_and_optional_fields() {
        let t4 = ipv4(6, &tcp());
        let t6 = ipv6(6, &tcp());
        check(
            &dec(&over_gre(&[0x00, 0x00, 0x08, 0x00], &t4)).unwrap(),
            false,
            1,
        );
        check(
            &dec(&over_gre(&[0x00, 0x00, 0x86, 0xdd], &t6)).unwrap(),
            true,
            1,
        );
        // C, K and S: checksum+reserved, key, sequence.
        let gre = cat(&[&[0xb0, 0x00, 0x08, 0x00], &[0xab; 12]]);
        check(&dec(&over_gre(&gre, &t4)).unwrap(), false, 1);
        // RFC 1701 routing: offset field, one 4-byte SRE, the null SRE.
        let gre = cat(&[
            &[0x40, 0x00, 0x08, 0x00],
            &[0; 4],
            &[0x08, 0x00, 0, 4, 1, 2, 3, 4],
            &[0; 4],
        ]);
        check(&dec(&over_gre(&gre, &t4)).unwrap(), false, 1);
        // Over IPv6.
        check(
            &dec(&eth(0x86dd, &outer6(47, &cat(&[&[0, 0, 0x08, 0x00], &t4])))).unwrap(),
            false,
            1,
        );
        // Truncated optional fields, unknown version, non-IP payload.
        assert_eq!(
            dec(&over_gre(&[0xb0, 0x00, 0x08, 0x00, 0, 0], &[])).unwrap_err(),
            DecodeError::Truncated(Layer::Gre)
        );
        assert_eq!(
            dec(&over_gre(&[0x00, 0x02, 0x08, 0x00], &t4)).unwrap_err(),
            DecodeError::Malformed(Layer::Gre)
        );
        assert_eq!(
            dec(&over_gre(&[0x00, 0x00, 0x88, 0x0c], &[0; 8])).unwrap_err(),
            DecodeError::NotIp
        );
        assert_eq!(
            dec(&over_gre(&[0x00, 0x00], &[])).unwrap_err(),
            DecodeError::Truncated(Layer::Gre)
        );
    }

    #[test]
    fn gre_ethernet_mpls_ppp() {
        // Transparent Ethernet bridging, with a key.
        check(
            &dec(&over_gre(
                &[0x20, 0x00, 0x65, 0x58, 0, 0, 0, 7],
                &eth_v4_tcp(),
            ))
            .unwrap(),
            false,
            1,
        );
        // MPLS.
        let mpls = cat(&[&[0x00, 0x01, 0x01, 0x40], &ipv4(6, &tcp())]);
        check(
            &dec(&over_gre(&[0x00, 0x00, 0x88, 0x47], &mpls)).unwrap(),
            false,
            1,
        );
        // PPTP: version 1, K, S and A; then PPP.
        let pptp = cat(&[
            &[0x30, 0x81, 0x88, 0x0b],
            &[0, 40, 0, 1],
            &[0, 0, 0, 5],
            &[0, 0, 0, 4],
        ]);
        let ppp = cat(&[&[0xff, 0x03, 0x00, 0x21], &ipv4(6, &tcp())]);
        check(&dec(&over_gre(&pptp, &ppp)).unwrap(), false, 1);
        // Version 1 that is not PPP is not PPTP.
        assert_eq!(
            dec(&over_gre(
                &[0x20, 0x01, 0x08, 0x00, 0, 0, 0, 0],
                &ipv4(6, &tcp())
            ))
            .unwrap_err(),
            DecodeError::Malformed(Layer::Gre)
        );
    }

    #[test]
    fn erspan_types_1_2_3() {
        let e = eth_v4_tcp();
        // Type I: no sequence number, no ERSPAN header.
        check(
            &dec(&over_gre(&[0x00, 0x00, 0x88, 0xbe], &e)).unwrap(),
            false,
            1,
        );
        // Type II: sequence number, 8-byte header (version 1, VLAN, session, index).
        let gre = [0x10, 0x00, 0x88, 0xbe, 0, 0, 0, 1];
        let ers = [0x10, 0x64, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00];
        check(&dec(&over_gre(&cat(&[&gre, &ers]), &e)).unwrap(), false, 1);
        // Type III without and with the platform sub-header (O bit).
        let gre = [0x10, 0x00, 0x22, 0xeb, 0, 0, 0, 1];
        let ers = [0x20, 0x64, 0x00, 0x01, 1, 2, 3, 4, 0, 0, 0x00, 0x00];
        check(&dec(&over_gre(&cat(&[&gre, &ers]), &e)).unwrap(), false, 1);
        let ers_o = [0x20, 0x64, 0x00, 0x01, 1, 2, 3, 4, 0, 0, 0x00, 0x01];
        check(
            &dec(&over_gre(&cat(&[&gre, &ers_o, &[0; 8]]), &e)).unwrap(),
            false,
            1,
        );
        // Type III, frame type 2: an IP packet, no Ethernet.
        let ers_ip = [0x20, 0x64, 0x00, 0x01, 1, 2, 3, 4, 0, 0, 0x08, 0x00];
        check(
            &dec(&over_gre(&cat(&[&gre, &ers_ip]), &ipv4(6, &tcp()))).unwrap(),
            false,
            1,
        );
        assert_eq!(
            dec(&over_gre(&gre, &[0x20, 0x64])).unwrap_err(),
            DecodeError::Truncated(Layer::Tunnel)
        );
    }

    #[test]
    fn aruba_gre_80211() {
        // What zeek's gre-aruba.pcap holds: GRE 0x8200, a QoS data frame, LLC/SNAP, IPv4.
        #[rustfmt::skip]
        let wifi: [u8; 26] = [
            0x88, 0x01, 0x00, 0x00,
            0xf0, 0x5c, 0x19, 0x7c, 0x8d, 0x70, 0x5c, 0x5f, 0x67, 0x02, 0x2e, 0x7a,
            0x00, 0x11, 0xdc, 0x00, 0x00, 0x01, 0x80, 0x7d, 0x00, 0x00,
        ];
        let inner = cat(&[
            &wifi,
            &[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00],
            &ipv4(6, &tcp()),
        ]);
        let f = eth(
            0x8100,
            &cat(&[
                &[0x01, 0x2c, 0x08, 0x00],
                &outer4(47, &cat(&[&[0, 0, 0x82, 0x00], &inner])),
            ]),
        );
        check(&dec(&f).unwrap(), false, 1);
    }

    #[test]
    fn vxlan_and_gpe() {
        let vx = [0x08, 0, 0, 0, 0x00, 0x00, 0x2a, 0x00];
        check(
            &dec(&over_udp(51000, 4789, &vx, &eth_v4_tcp())).unwrap(),
            false,
            1,
        );
        check(
            &dec(&over_udp(51000, 8472, &vx, &eth_v4_tcp())).unwrap(),
            false,
            1,
        );
        // VXLAN inside a VLAN, carrying IPv6 in a VLAN.
        let inner = eth(0x8100, &cat(&[&[0, 7, 0x86, 0xdd], &ipv6(6, &tcp())]));
        let f = eth(
            0x8100,
            &cat(&[
                &[0, 9, 0x08, 0x00],
                &outer4(17, &udp(51000, 4789, &cat(&[&vx, &inner]))),
            ]),
        );
        check(&dec(&f).unwrap(), true, 1);
        // I flag clear.
        assert_eq!(
            dec(&over_udp(51000, 4789, &[0; 8], &eth_v4_tcp())).unwrap_err(),
            DecodeError::NotTcp
        );
        assert_eq!(
            dec(&over_udp(51000, 4789, &[0x08, 0, 0], &[])).unwrap_err(),
            DecodeError::Truncated(Layer::Tunnel)
        );
        // GPE: next protocol IPv6 / Ethernet.
        check(
            &dec(&over_udp(
                51000,
                4790,
                &[0x0c, 0, 0, 2, 0, 0, 1, 0],
                &ipv6(6, &tcp()),
            ))
            .unwrap(),
            true,
            1,
        );
        check(
            &dec(&over_udp(
                51000,
                4790,
                &[0x0c, 0, 0, 3, 0, 0, 1, 0],
                &eth_v4_tcp(),
            ))
            .unwrap(),
            false,
            1,
        );
    }

    #[test]
    fn geneve() {
        // No options, Ethernet.
        check(
            &dec(&over_udp(
                51000,
                6081,
                &[0x00, 0, 0x65, 0x58, 0, 0, 1, 0],
                &eth_v4_tcp(),
            ))
            .unwrap(),
            false,
            1,
        );
        // Two words of options, IPv4 directly.
        let geneve = [
            0x02, 0, 0x08, 0x00, 0, 0, 1, 0, 0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef,
        ];
        check(
            &dec(&over_udp(51000, 6081, &geneve, &ipv4(6, &tcp()))).unwrap(),
            false,
            1,
        );
        // Options past the end; version 1.
        assert_eq!(
            dec(&over_udp(
                51000,
                6081,
                &[0x3f, 0, 0x65, 0x58, 0, 0, 1, 0],
                &[]
            ))
            .unwrap_err(),
            DecodeError::Truncated(Layer::Tunnel)
        );
        assert_eq!(
            dec(&over_udp(
                51000,
                6081,
                &[0x40, 0, 0x65, 0x58, 0, 0, 1, 0],
                &eth_v4_tcp()
            ))
            .unwrap_err(),
            DecodeError::NotTcp
        );
    }

    fn gtp(flags: u8, msg: u8, rest: &[u8], inner: &[u8]) -> Vec<u8> {
        let len = ((rest.len() - 8 + inner.len()) as u16).to_be_bytes();
        let mut h = vec![flags, msg, len[0], len[1]];
        h.extend_from_slice(&rest[4..]);
        cat(&[&h, inner])
    }

    #[test]
    fn gtp_u() {
        let t4 = ipv4(6, &tcp());
        let t6 = ipv6(6, &tcp());
        // Plain G-PDU: 8 bytes.
        let g = gtp(0x30, 0xff, &[0, 0, 0, 0, 0, 0, 0, 1], &t4);
        check(&dec(&over_udp(2152, 2152, &g, &[])).unwrap(), false, 1);
        // With S set (4 more bytes) and IPv6 inside.
        let g = gtp(0x32, 0xff, &[0, 0, 0, 0, 0, 0, 0, 1, 0, 7, 0, 0], &t6);
        check(&dec(&over_udp(2152, 2152, &g, &[])).unwrap(), true, 1);
        // With an extension header chain: PDU session container (0x85), 4 bytes, end.
        let g = gtp(
            0x34,
            0xff,
            &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x85, 1, 0x10, 0x01, 0x00],
            &t4,
        );
        check(&dec(&over_udp(2152, 2152, &g, &[])).unwrap(), false, 1);
        // On another UDP port, recognised by content (zeek's gtp2_different_udp_port.pcap
        // uses 2152 on one side only; this uses neither).
        let g = gtp(0x30, 0xff, &[0, 0, 0, 0, 0, 0, 0, 1], &t4);
        check(&dec(&over_udp(40000, 40001, &g, &[])).unwrap(), false, 1);
        // ... but not if the length does not match.
        let mut bad = g.clone();
        bad[3] ^= 1;
        assert_eq!(
            dec(&over_udp(40000, 40001, &bad, &[])).unwrap_err(),
            DecodeError::NotTcp
        );
        // Echo request, GTPv2, zero-length extension.
        let echo = gtp(0x32, 0x01, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], &[]);
        assert_eq!(
            dec(&over_udp(2152, 2152, &echo, &[])).unwrap_err(),
            DecodeError::NotTcp
        );
        let v2 = gtp(0x48, 0xff, &[0, 0, 0, 0, 0, 0, 0, 1], &t4);
        assert_eq!(
            dec(&over_udp(2152, 2152, &v2, &[])).unwrap_err(),
            DecodeError::NotTcp
        );
        let g = gtp(
            0x34,
            0xff,
            &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x85, 0, 0, 0, 0],
            &t4,
        );
        assert_eq!(
            dec(&over_udp(2152, 2152, &g, &[])).unwrap_err(),
            DecodeError::Malformed(Layer::Tunnel)
        );
    }

    #[test]
    fn teredo() {
        let t6 = ipv6(6, &tcp());
        check(&dec(&over_udp(3544, 40000, &[], &t6)).unwrap(), true, 1);
        // Origin indication.
        check(
            &dec(&over_udp(3544, 40000, &[0, 0, 0x12, 0x34, 1, 2, 3, 4], &t6)).unwrap(),
            true,
            1,
        );
        // Authentication (id length 2, auth length 1) and origin indication.
        let auth = [0, 1, 2, 1, 0xaa, 0xbb, 0xcc, 1, 2, 3, 4, 5, 6, 7, 8, 0];
        check(
            &dec(&over_udp(
                40000,
                3544,
                &cat(&[&auth, &[0, 0, 0x12, 0x34, 1, 2, 3, 4]]),
                &t6,
            ))
            .unwrap(),
            true,
            1,
        );
        // Teredo bubble (IPv6 with no next header) and IPv4 inside.
        assert_eq!(
            dec(&over_udp(3544, 40000, &[], &ipv6(59, &[]))).unwrap_err(),
            DecodeError::NotTcp
        );
        assert_eq!(
            dec(&over_udp(3544, 40000, &[], &ipv4(6, &tcp()))).unwrap_err(),
            DecodeError::NotTcp
        );
    }

    #[test]
    fn ayiya() {
        // Identity length 2^4 = 16, signature 5 words = 20, opcode 1 (forward), next 41.
        let hdr = cat(&[
            &[0x41, 0x52, 0x11, 41, 0x50, 0x00, 0x00, 0x00],
            &[0x11; 16],
            &[0x22; 20],
        ]);
        check(
            &dec(&over_udp(53859, 5072, &hdr, &ipv6(6, &tcp()))).unwrap(),
            true,
            1,
        );
        // Heartbeat (opcode 0).
        let hb = cat(&[&[0x41, 0x52, 0x10, 59, 0, 0, 0, 0], &[0; 36]]);
        assert_eq!(
            dec(&over_udp(53859, 5072, &hb, &[])).unwrap_err(),
            DecodeError::NotTcp
        );
    }

    #[test]
    fn l2tp_v2() {
        let ppp = cat(&[&[0xff, 0x03, 0x00, 0x57], &ipv6(6, &tcp())]);
        // dpkt's nb6-http.pcap: flags 0x0002, tunnel, session, PPP.
        check(
            &dec(&over_udp(
                1701,
                1701,
                &[0x00, 0x02, 0x05, 0xf7, 0x20, 0x6a],
                &ppp,
            ))
            .unwrap(),
            true,
            1,
        );
        // Length, sequence and offset fields.
        let hdr = [0x4a, 0x02, 0, 60, 0, 1, 0, 2, 0, 5, 0, 6, 0, 2, 0xee, 0xee];
        check(&dec(&over_udp(1701, 1701, &hdr, &ppp)).unwrap(), true, 1);
        // Control message; L2TPv3.
        assert_eq!(
            dec(&over_udp(
                1701,
                1701,
                &[0xc8, 0x02, 0, 12, 0, 1, 0, 2, 0, 0, 0, 0],
                &[]
            ))
            .unwrap_err(),
            DecodeError::NotTcp
        );
        assert_eq!(
            dec(&over_udp(1701, 1701, &[0x00, 0x03, 0, 0, 0, 1], &ppp)).unwrap_err(),
            DecodeError::NotTcp
        );
    }

    #[test]
    fn plain_udp_and_truncated_udp() {
        assert_eq!(
            dec(&eth(0x0800, &outer4(17, &udp(5353, 53, &[0; 12])))).unwrap_err(),
            DecodeError::NotTcp
        );
        assert_eq!(
            dec(&eth(0x0800, &outer4(17, &[0x12, 0x34, 0x12, 0xb5]))).unwrap_err(),
            DecodeError::Truncated(Layer::Udp)
        );
        // The UDP length bounds the tunnel payload: trailing bytes are not part of it.
        let mut u = udp(
            51000,
            4789,
            &cat(&[&[0x08, 0, 0, 0, 0, 0, 1, 0], &eth_v4_tcp()]),
        );
        u.extend_from_slice(&[0xee; 4]);
        let f = eth(0x0800, &outer4(17, &u));
        check(&dec(&f).unwrap(), false, 1);
    }

    #[test]
    fn tunnels_nest() {
        // VXLAN inside GRE inside IPv6: two enclosing levels below the outermost.
        let vx = eth(
            0x0800,
            &outer4(
                17,
                &udp(
                    51000,
                    4789,
                    &cat(&[&[0x08, 0, 0, 0, 0, 0, 1, 0], &eth_v4_tcp()]),
                ),
            ),
        );
        let f = eth(0x86dd, &outer6(47, &cat(&[&[0x00, 0x00, 0x65, 0x58], &vx])));
        check(&dec(&f).unwrap(), false, 2);
    }
}
