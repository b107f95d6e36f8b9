#!/usr/bin/env python3
"""A capture with N distinct responders, for `metro analyze`'s memory bound (--max-responders).

    scripts/many-responders.py N OUT.pcap        (e.g. 1000000 /tmp/1m.pcap: 3M packets, 200 MB)

One client (10.0.0.1) opens one connection to each of N servers (100.64.0.0/10 and up, one
address each): SYN, SYN/ACK 1 ms later, ACK 1 ms after that. Each handshake gives one sample
whose responder is the server (SYN -> SYN/ACK) and one whose responder is the client, so the
analysis sees N + 1 responders. Measure with `/usr/bin/time -f %M metro analyze -q OUT.pcap`.
"""
import struct
import sys


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(src, dst, sport, dport, seq, ack, flags):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    eth = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00"
    return eth + ip + tcp


def main():
    n = int(sys.argv[1])
    out = open(sys.argv[2], "wb")
    out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))  # nanosecond pcap
    client = bytes([10, 0, 0, 1])
    t = 1_700_000_000 * 10**9
    SYN, ACK = 0x02, 0x10
    buf = []
    for i in range(n):
        server = struct.pack("!I", (100 << 24 | 64 << 16) + i)
        sport = 1024 + i % 60000
        isn_c, isn_s = i * 7919 & 0xFFFFFFFF, i * 104729 & 0xFFFFFFFF
        pkts = (
            (t, frame(client, server, sport, 443, isn_c, 0, SYN)),
            (t + 1_000_000, frame(server, client, 443, sport, isn_s, isn_c + 1 & 0xFFFFFFFF, SYN | ACK)),
            (t + 2_000_000, frame(client, server, sport, 443, isn_c + 1 & 0xFFFFFFFF, isn_s + 1 & 0xFFFFFFFF, ACK)),
        )
        for ts, f in pkts:
            buf.append(struct.pack("<IIII", ts // 10**9, ts % 10**9, len(f), len(f)) + f)
        t += 10_000  # a new connection every 10 µs
        if len(buf) > 30000:
            out.write(b"".join(buf))
            buf.clear()
    out.write(b"".join(buf))
    out.close()


main()
