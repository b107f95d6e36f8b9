// SPDX-License-Identifier: MIT OR GPL-2.0
//
// metro's in-kernel capture (agent::ebpf): a tc classifier run on ingress and egress of each
// captured interface. It decodes Ethernet (up to two VLAN/QinQ tags), IPv4 (options,
// fragments) or IPv6 (extension headers, fragments) and TCP (header, timestamp option, first
// SACK block), keeps the segments of which either address is in the watch list (two LPM
// tries, filled and changed in place by user space) and writes one fixed-size record per
// segment into a ring buffer: the fields of the engine's `Segment`, a timestamp, the
// interface and, on egress, the sending socket's cgroup. It never changes or drops a packet
// (always TC_ACT_UNSPEC). What it cannot decode (tunnels, MPLS, PPPoE, a third VLAN tag,
// too many IPv6 extension headers, malformed headers) is counted by reason in `counters` and
// handed to user space whole, as a raw-frame record (the frame's first 256 bytes) that
// metro-core's decoder reads as it reads libpcap's copies; so are watched UDP, ICMP and
// ICMPv6 frames when user space sets CFG_OTHER_PROTOCOLS in `config`, and, when it sets
// CFG_DNS_TCP, watched TCP segments whose payload starts as a DNS query or response does
// (DNS over TCP: the tracker needs the payload, which a record does not carry).
//
// The record layout is mirrored by crates/metro/src/agent/ebpf/record.rs; the root tests in
// tests/it/agent_ebpf.rs compare its records with metro-core's decode of the same frames.
//
// Built by crates/metro/build.rs with clang (-target bpf), embedded in the binary, and
// checked by the kernel's verifier in a root test (tests/it/agent_ebpf.rs).

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define ETH_P_MPLS_UC 0x8847
#define ETH_P_MPLS_MC 0x8848
#define ETH_P_PPP_SES 0x8864

#define IPPROTO_HOPOPTS 0
#define IPPROTO_ICMP 1
#define IPPROTO_IPIP 4
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_IPV6 41
#define IPPROTO_ROUTING 43
#define IPPROTO_ICMPV6 58
#define IPPROTO_FRAGMENT 44
#define IPPROTO_GRE 47
#define IPPROTO_AH 51
#define IPPROTO_DSTOPTS 60
#define IPPROTO_ETHERIP 97
#define IPPROTO_MOBILITY 135
#define IPPROTO_MPLS 137
#define IPPROTO_HIP 139
#define IPPROTO_SHIM6 140
#define IPPROTO_ETHERNET 143

// As metro-core's IPv6 decoder: at most this many extension headers.
#define MAX_EXT_HEADERS 16
// TCP options area: at most 40 bytes.
#define MAX_OPTS 40

// Bytes a CPU writes between two wakeups of the reader (about 1,400 records), unless user
// space sets fewer in config[CFG_WAKE_SLOT] (a ring shared by many CPUs: see wake_flag).
#define WAKEUP_BYTES (128 * 1024)

// Record.bits
#define BIT_IPV6 1
#define BIT_TIMESTAMP 2
#define BIT_SACK 4
#define BIT_FIRST_FRAGMENT 8
#define BIT_EGRESS 16

// counters: indexes (agent::ebpf::Counter mirrors them).
#define C_RECORDS 0         // records written
#define C_RING_FULL 1       // records lost: the ring buffer was full (a kernel drop)
#define C_UNPARSED 2        // frames the program does not decode (MPLS, PPPoE, tunnels, 3+ VLAN tags, too many IPv6 extension headers)
#define C_MALFORMED 3       // IP or TCP headers that are truncated or impossible
#define C_FRAGMENTS 4       // later fragments of TCP datagrams (no TCP header)
#define C_NOT_WATCHED 5     // TCP segments outside the watch list
#define C_RAW 6             // raw-frame records written (struct raw)
#define C_WAKE_BYTES 7      // not a count: bytes this CPU wrote since it last woke the reader
#define C_COUNTERS 8

// struct raw.reason: why a frame went to user space whole (agent::ebpf::record::RawReason).
#define R_UNPARSED 1        // a link layer, tunnel or header chain the program does not walk
#define R_MALFORMED 2       // IP or TCP headers the program finds truncated or impossible
#define R_UDP 3             // UDP (config: CFG_OTHER_PROTOCOLS)
#define R_ICMP 4            // ICMP or ICMPv6 (config: CFG_OTHER_PROTOCOLS)
#define R_DNS 5             // TCP whose payload may be a DNS message (config: CFG_DNS_TCP)

// config[0] bits, set by user space.
#define CFG_OTHER_PROTOCOLS 1 // pass watched UDP, ICMP and ICMPv6 frames as raw records
#define CFG_NO_TCP 2          // no TCP records: the instance's protocols leave TCP out
#define CFG_DNS_TCP 4         // pass watched TCP segments that may carry DNS as raw records
#define CFG_L3_PRESENT 8      // l3_interfaces has an entry (else its per-frame lookup is skipped)

// As metro-core's dns::MIN_MESSAGE: a header, the root name and a question's type and class.
#define DNS_MIN_MESSAGE (12 + 1 + 4)

// The bytes of a frame a raw record carries at most.
#define RAW_BYTES 256

// One TCP segment: 92 bytes (96 with padding); numbers in host order, addresses as on the
// wire.
struct record {
	__u64 ts;          // bpf_ktime_get_ns(): CLOCK_MONOTONIC
	__u64 cgroup;      // egress: bpf_skb_cgroup_id(); 0 on ingress
	__u8 src[16];      // IPv4: the first 4 bytes
	__u8 dst[16];
	__u32 ifindex;
	__u32 seq;
	__u32 ack;
	__u32 payload_len;
	__u32 tsval;
	__u32 tsecr;
	__u32 sack_left;   // the first SACK block (user space decides whether it is a DSACK)
	__u32 sack_right;
	__u16 sport;
	__u16 dport;
	__u16 ip_id;
	__u16 flags;       // TCP flags, AE/NS in bit 8
	__u32 bits;        // BIT_*
	__u32 zero;        // the padding to 96 bytes, written as 0
};

_Static_assert(sizeof(struct record) == 96, "agent::ebpf::record reads 96 bytes");

// Scratch space for the record being built and the TCP options (a map value, so that the
// options can be read at a variable offset).
struct scratch {
	struct record rec;
	__u8 opts[128];
	// Loop state kept in the map value, not in registers: the verifier then sees every
	// iteration alike (an unknown position, bounded by a check) and walks each once.
	__u32 pos;
	__u32 nh;
};

// A frame the program hands over whole (its first RAW_BYTES bytes): 288 bytes, told apart
// from a `struct record` by its size. User space decodes it with metro-core's decoder.
struct raw {
	__u64 ts;          // bpf_ktime_get_ns()
	__u64 cgroup;      // egress: bpf_skb_cgroup_id(); 0 on ingress
	__u32 ifindex;
	__u32 len;         // the frame's length (skb->len)
	__u32 caplen;      // the bytes of it in data
	__u16 reason;      // R_*
	__u16 bits;        // RAW_EGRESS, RAW_L3
	__u8 data[RAW_BYTES];
};

#define RAW_EGRESS 1
#define RAW_L3 2     // the frame starts at the IP header (no link-layer header)

struct lpm4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23); // user space sets the size at load time
} records SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 22);
	__type(key, struct lpm4);
	__type(value, __u8);
} watch4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 22);
	__type(key, struct lpm6);
	__type(value, __u8);
} watch6 SEC(".maps");

// What user space switched on (CFG_*) in slot 0; in slot CFG_WAKE_SLOT, the bytes a CPU
// writes between two wakeups (0: WAKEUP_BYTES).
#define CFG_WAKE_SLOT 1
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} config SEC(".maps");

// Interfaces without a link-layer header (tun, WireGuard): their frames start at IP.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} l3_interfaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);
	if (c)
		*c += 1;
}

static __always_inline __u32 be32_at(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | (__u32)p[3];
}

// An offset into the packet already checked to be below 4 KiB, masked so that the verifier
// sees the bound on the register added to the packet pointer (clang may check a copy).
static __always_inline __u32 pkt_off(__u32 off)
{
	asm volatile("%[off] &= 0xfff" : [off] "+r"(off));
	return off;
}

// The `len` (a constant) bytes of the frame at `off`: where they are in the skb's linear
// area (the usual case), a pointer to them in place (direct packet access, no copy); else
// copied into `buf` by bpf_skb_load_bytes (paged data) and a pointer to `buf`; NULL when the
// frame is shorter. Read as the packet's bytes; the multi-byte fields with BE16/BE32 at
// offsets that are multiples of their size (each `buf` is 8-aligned: the verifier checks
// the alignment of stack accesses; packet data is read unaligned, which this target allows).
static __always_inline const __u8 *hdr(struct __sk_buff *skb, __u32 off, void *buf, __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	// Bounded for the verifier (packet offsets are below 64 KiB).
	if (off < 0x1000) {
		const __u8 *p = data + pkt_off(off);
		if ((void *)(p + len) <= end)
			return p;
	}
	if (bpf_skb_load_bytes(skb, off, buf, len) < 0)
		return 0;
	return buf;
}

#define BE16(p, i) bpf_ntohs(*(const __u16 *)((p) + (i)))
#define BE32(p, i) bpf_ntohl(*(const __u32 *)((p) + (i)))
#define ALIGNED __attribute__((aligned(8)))

// The timestamp option and the first SACK block, as metro-core's TcpOptions::parse: skip
// unknown options, stop at the end-of-list, at a malformed option (length below 2 or past
// the end) and at a known option with the wrong length, keeping what was read. A global
// function: the verifier checks it once, not once per path of the caller.
// An index into the options buffer, masked in a way clang cannot drop as redundant: the
// verifier must see the bound on the register it indexes with.
static __always_inline __u32 opt_index(__u32 i)
{
	asm volatile("%[i] &= 63" : [i] "+r"(i));
	return i;
}

__noinline int parse_options(struct scratch *s, __u32 len)
{
	if (!s)
		return 0;
	volatile __u32 *pos = &s->pos;
	*pos = 0;
	for (int k = 0; k < MAX_OPTS; k++) {
		__u32 i = *pos;
		if (i >= len || i >= MAX_OPTS)
			break;
		__u8 kind = s->opts[opt_index(i)];
		if (kind == 0)
			break;
		if (kind == 1) {
			*pos = i + 1;
			continue;
		}
		if (i + 1 >= len)
			break;
		__u32 olen = s->opts[opt_index(i + 1)];
		if (olen < 2 || i + olen > len)
			break;
		if ((kind == 2 && olen != 4) || (kind == 3 && olen != 3) || (kind == 4 && olen != 2))
			break;
		if (kind == 8) {
			if (olen != 10)
				break;
			s->rec.tsval = be32_at(&s->opts[opt_index(i + 2)]);
			s->rec.tsecr = be32_at(&s->opts[opt_index(i + 6)]);
			s->rec.bits |= BIT_TIMESTAMP;
		} else if (kind == 5) {
			if (olen == 2 || (olen - 2) % 8 != 0)
				break;
			// The engine reads the first block of the last SACK option.
			s->rec.sack_left = be32_at(&s->opts[opt_index(i + 2)]);
			s->rec.sack_right = be32_at(&s->opts[opt_index(i + 6)]);
			s->rec.bits |= BIT_SACK;
		}
		*pos = i + olen;
	}
	return 0;
}

// The IPv6 extension headers from `off` (right after the fixed header) with `nh` the first
// next header, as metro-core's decoder walks them. Returns the bytes they take in the low
// 32 bits, the upper-layer protocol in bits 32-39, FRAG_FIRST/FRAG_LATER, or a negative
// C_* counter when the walk failed. A global function, verified once.
#define FRAG_FIRST (1ULL << 40)
#define FRAG_LATER (1ULL << 41)
__noinline __s64 ipv6_ext(struct __sk_buff *skb, struct scratch *s, __u32 off, __u32 first)
{
	if (!s)
		return -C_MALFORMED;
	volatile __u32 *pos = &s->pos;
	volatile __u32 *next = &s->nh;
	*pos = 0;
	*next = first;
	__u64 frag = 0;
	for (int k = 0; k < MAX_EXT_HEADERS; k++) {
		__u32 ext = *pos;
		__u32 nh = *next;
		__u32 len;
		__u8 e[4];
		if (ext > 0xffff)
			return -C_MALFORMED;
		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS &&
		    nh != IPPROTO_MOBILITY && nh != IPPROTO_HIP && nh != IPPROTO_SHIM6 &&
		    nh != IPPROTO_AH && nh != IPPROTO_FRAGMENT)
			return (__s64)((__u64)ext | ((__u64)(nh & 0xff) << 32) | frag);
		if (bpf_skb_load_bytes(skb, off + ext, e, 4) < 0)
			return -C_MALFORMED;
		if (nh == IPPROTO_FRAGMENT) {
			__u16 word = ((__u16)e[2] << 8) | e[3];
			len = 8;
			if (word >> 3)
				// What follows is data, not headers.
				return (__s64)((__u64)(ext + len) | ((__u64)e[0] << 32) | FRAG_LATER);
			if (word & 1)
				frag = FRAG_FIRST;
		} else if (nh == IPPROTO_AH) {
			len = ((__u32)e[1] + 2) * 4;
		} else {
			len = ((__u32)e[1] + 1) * 8;
		}
		*next = e[0];
		*pos = ext + len;
	}
	return -C_UNPARSED;
}

static __always_inline int is_tunnel(__u8 proto)
{
	return proto == IPPROTO_IPIP || proto == IPPROTO_IPV6 || proto == IPPROTO_GRE ||
	       proto == IPPROTO_MPLS || proto == IPPROTO_ETHERNET || proto == IPPROTO_ETHERIP;
}

static __always_inline __u64 wake_flag(__u32 bytes)
{
	// Wake the reader once a batch is written: each CPU wakes it every `every` bytes it
	// writes, counted in its own slot of `counters`. A wakeup per record cost the reader a
	// system call per packet and the sender an interrupt-time wakeup (irq_work, an IPI: a
	// VM exit in a guest) per packet; asking the ring how much is waiting cost a read of the
	// consumer's position (a cache line the reader's CPU writes) per packet, and woke on
	// every record written while the reader, already woken, had not caught up. Per CPU, up
	// to (CPUs x `every`) bytes can wait unannounced: user space sets `every` so that this
	// stays a quarter of the ring (agent::ebpf::Kernel::open). Meanwhile the reader polls on
	// its own timeout (10 ms while records flow, 100 ms idle: agent::ebpf::run).
	__u32 slot = CFG_WAKE_SLOT;
	__u32 *set = bpf_map_lookup_elem(&config, &slot);
	__u64 every = set && *set ? *set : WAKEUP_BYTES;
	__u32 which = C_WAKE_BYTES;
	__u64 *b = bpf_map_lookup_elem(&counters, &which);
	if (!b)
		return BPF_RB_NO_WAKEUP;
	*b += bytes;
	if (*b < every)
		return BPF_RB_NO_WAKEUP;
	*b = 0;
	return BPF_RB_FORCE_WAKEUP;
}

// Hands the frame over whole (its first RAW_BYTES bytes) for user space to decode. A
// subprogram, verified once.
static __noinline int emit_raw(struct __sk_buff *skb, __u32 reason, __u32 egress, __u32 l3)
{
	__u32 len = skb->len;
	__u32 n = len < RAW_BYTES ? len : RAW_BYTES;
	if (n == 0)
		return 0;
	struct raw *r = bpf_ringbuf_reserve(&records, sizeof(struct raw), 0);
	if (!r) {
		count(C_RING_FULL);
		return 0;
	}
	r->ts = bpf_ktime_get_ns();
	r->cgroup = egress ? bpf_skb_cgroup_id(skb) : 0;
	r->ifindex = skb->ifindex;
	r->len = len;
	r->reason = reason;
	r->bits = (egress ? RAW_EGRESS : 0) | (l3 ? RAW_L3 : 0);
	_Static_assert(RAW_BYTES == 256, "the mask below is RAW_BYTES - 1");
	// The verifier needs the length bounded (1 to RAW_BYTES) on the register itself.
	__u32 m = n - 1;
	asm volatile("%[m] &= 255" : [m] "+r"(m));
	if (bpf_skb_load_bytes(skb, 0, r->data, m + 1) < 0)
		m = (__u32)-1;
	r->caplen = m + 1;
	bpf_ringbuf_submit(r, wake_flag(sizeof(struct raw)));
	count(C_RAW);
	return 0;
}

// A frame the program leaves aside: counted by `which` and handed over whole.
#define ASIDE(which, reason)                                   \
	do {                                                   \
		count(which);                                  \
		emit_raw(skb, (reason), egress, l3_iface);     \
		return TC_ACT_UNSPEC;                          \
	} while (0)

static __always_inline int handle(struct __sk_buff *skb, int egress)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return TC_ACT_UNSPEC;
	struct record *r = &s->rec;
	__u32 ifindex = skb->ifindex;
	__u32 off = 0;
	__u16 proto;
	__u32 *cfg = bpf_map_lookup_elem(&config, &zero);
	__u32 other = cfg && (*cfg & CFG_OTHER_PROTOCOLS);
	__u32 no_tcp = cfg && (*cfg & CFG_NO_TCP);
	__u32 dns_tcp = cfg && (*cfg & CFG_DNS_TCP);
	__u32 l3_present = cfg && (*cfg & CFG_L3_PRESENT);
	// R_UDP or R_ICMP once the watch list is checked: the frame goes over whole.
	__u32 pass = 0;
	__u32 l3_iface = 0;

	// A hash lookup a frame (about 8% of the program's time on a data segment): only where
	// such an interface is captured.
	if (l3_present && bpf_map_lookup_elem(&l3_interfaces, &ifindex)) {
		l3_iface = 1;
		proto = bpf_ntohs(skb->protocol);
	} else {
		__u8 eth_buf[ETH_HLEN] ALIGNED;
		const __u8 *eth = hdr(skb, 0, eth_buf, ETH_HLEN);
		if (!eth)
			return TC_ACT_UNSPEC;
		proto = BE16(eth, 12);
		off = ETH_HLEN;
#pragma unroll
		for (int k = 0; k < 2; k++) {
			if (proto == ETH_P_8021Q || proto == ETH_P_8021AD) {
				__u8 tag_buf[4] ALIGNED;
				const __u8 *tag = hdr(skb, off, tag_buf, 4);
				if (!tag)
					ASIDE(C_MALFORMED, R_MALFORMED);
				proto = BE16(tag, 2);
				off += 4;
			}
		}
		if (proto == ETH_P_8021Q || proto == ETH_P_8021AD)
			ASIDE(C_UNPARSED, R_UNPARSED);
	}

	// Each field is written below; these only on some paths.
	__builtin_memset(r->src, 0, 32);
	r->bits = 0;
	r->ip_id = 0;
	__u32 l3 = off;
	__u32 ip_payload;
	// The IP header's length field was 0 (segmentation offload, a jumbogram): the length is
	// the packet's, which a raw frame cut at RAW_BYTES does not tell user space.
	__u32 unsized = 0;
	__u8 nh;
	if (proto == ETH_P_IP) {
		__u8 h_buf[20] ALIGNED;
		const __u8 *h = hdr(skb, off, h_buf, 20);
		if (!h || (h[0] >> 4) != 4)
			ASIDE(C_MALFORMED, R_MALFORMED);
		__u32 hl = (h[0] & 0x0f) * 4;
		__u32 total = BE16(h, 2);
		__u16 frag = BE16(h, 6);
		nh = h[9];
		if (is_tunnel(nh))
			ASIDE(C_UNPARSED, R_UNPARSED);
		if (nh != IPPROTO_TCP) {
			if (!other || (nh != IPPROTO_UDP && nh != IPPROTO_ICMP))
				return TC_ACT_UNSPEC;
			pass = nh == IPPROTO_UDP ? R_UDP : R_ICMP;
		} else if (no_tcp && !dns_tcp) {
			return TC_ACT_UNSPEC;
		}
		if (frag & 0x1fff) {
			if (!pass)
				count(C_FRAGMENTS);
			return TC_ACT_UNSPEC;
		}
		// Segmentation offload leaves the length 0: the packet's own length.
		if (total == 0) {
			total = skb->len - l3;
			unsized = 1;
		}
		if (hl < 20 || total < hl || skb->len < l3 + hl)
			ASIDE(C_MALFORMED, R_MALFORMED);
		ip_payload = total - hl;
		*(__u32 *)r->src = *(const __u32 *)(h + 12);
		*(__u32 *)r->dst = *(const __u32 *)(h + 16);
		r->ip_id = BE16(h, 4);
		if ((frag & 0x3fff) == 0x2000)
			r->bits |= BIT_FIRST_FRAGMENT;
		off += hl;
	} else if (proto == ETH_P_IPV6) {
		__u8 h_buf[40] ALIGNED;
		const __u8 *h = hdr(skb, off, h_buf, 40);
		if (!h || (h[0] >> 4) != 6)
			ASIDE(C_MALFORMED, R_MALFORMED);
		__u32 plen = BE16(h, 4);
		nh = h[6];
		__u64 *src = (__u64 *)r->src, *dst = (__u64 *)r->dst;
		src[0] = *(const __u64 *)(h + 8);
		src[1] = *(const __u64 *)(h + 16);
		dst[0] = *(const __u64 *)(h + 24);
		dst[1] = *(const __u64 *)(h + 32);
		r->bits |= BIT_IPV6;
		off += 40;
		__s64 walk = ipv6_ext(skb, s, off, nh);
		if (walk == -C_UNPARSED)
			ASIDE(C_UNPARSED, R_UNPARSED);
		if (walk < 0)
			ASIDE(C_MALFORMED, R_MALFORMED);
		__u32 ext = (__u32)walk;
		nh = (__u8)(walk >> 32);
		if (walk & FRAG_LATER) {
			if (nh == IPPROTO_TCP && !no_tcp)
				count(C_FRAGMENTS);
			return TC_ACT_UNSPEC;
		}
		if (walk & FRAG_FIRST)
			r->bits |= BIT_FIRST_FRAGMENT;
		if (is_tunnel(nh))
			ASIDE(C_UNPARSED, R_UNPARSED);
		if (nh != IPPROTO_TCP) {
			if (!other || (nh != IPPROTO_UDP && nh != IPPROTO_ICMPV6))
				return TC_ACT_UNSPEC;
			pass = nh == IPPROTO_UDP ? R_UDP : R_ICMP;
		} else if (no_tcp && !dns_tcp) {
			return TC_ACT_UNSPEC;
		}
		// Payload length 0: segmentation offload (or a jumbogram): the packet's length.
		__u32 declared = plen ? plen : skb->len - l3 - 40;
		unsized = plen == 0;
		if (ext > declared)
			ASIDE(C_MALFORMED, R_MALFORMED);
		ip_payload = declared - ext;
		off += ext;
	} else {
		if (proto == ETH_P_MPLS_UC || proto == ETH_P_MPLS_MC || proto == ETH_P_PPP_SES)
			ASIDE(C_UNPARSED, R_UNPARSED);
		return TC_ACT_UNSPEC;
	}

	// The watch list: either address.
	if (r->bits & BIT_IPV6) {
		struct lpm6 k = {.prefixlen = 128};
		__builtin_memcpy(k.addr, r->src, 16);
		if (!bpf_map_lookup_elem(&watch6, &k)) {
			__builtin_memcpy(k.addr, r->dst, 16);
			if (!bpf_map_lookup_elem(&watch6, &k)) {
				count(C_NOT_WATCHED);
				return TC_ACT_UNSPEC;
			}
		}
	} else {
		struct lpm4 k = {.prefixlen = 32};
		__builtin_memcpy(k.addr, r->src, 4);
		if (!bpf_map_lookup_elem(&watch4, &k)) {
			__builtin_memcpy(k.addr, r->dst, 4);
			if (!bpf_map_lookup_elem(&watch4, &k)) {
				count(C_NOT_WATCHED);
				return TC_ACT_UNSPEC;
			}
		}
	}

	if (pass) {
		emit_raw(skb, pass, egress, l3_iface);
		return TC_ACT_UNSPEC;
	}

	__u8 t_buf[20] ALIGNED;
	const __u8 *t = ip_payload < 20 ? 0 : hdr(skb, off, t_buf, 20);
	if (!t)
		ASIDE(C_MALFORMED, R_MALFORMED);
	__u32 doff = (t[12] >> 4) * 4;
	if (doff < 20 || ip_payload < doff)
		ASIDE(C_MALFORMED, R_MALFORMED);
	r->sport = BE16(t, 0);
	r->dport = BE16(t, 2);
	r->seq = BE32(t, 4);
	r->ack = BE32(t, 8);
	r->flags = BE16(t, 12) & 0x01ff;
	r->payload_len = ip_payload - doff;

	// DNS over TCP: a payload that starts as metro-core's Tracker::may_be_dns accepts (the
	// message length, then a header with QDCOUNT 1 and the opcode QUERY) goes over whole,
	// for the tracker; the same check, so that both paths time the same messages. Any port,
	// as on the libpcap path. A segment that only looks like DNS costs a raw record, not a
	// sample: user space decodes it to the same segment, provided the raw frame holds the
	// headers and what the check read (the frame's first RAW_BYTES bytes; so the check is
	// may_be_dns's on the captured payload) and the IP header states its length; otherwise
	// (a segmentation-offload super-packet, headers longer than about 230 bytes) it stays a
	// record, which metro-core's decode of the cut frame would not equal.
	if (dns_tcp && !unsized && off + doff + 2 + DNS_MIN_MESSAGE <= RAW_BYTES &&
	    r->payload_len >= 2 + DNS_MIN_MESSAGE) {
		__u8 d_buf[8] ALIGNED;
		const __u8 *d = hdr(skb, off + doff, d_buf, 8);
		if (d && BE16(d, 0) >= DNS_MIN_MESSAGE && (d[4] & 0x78) == 0 && d[6] == 0 &&
		    d[7] == 1) {
			emit_raw(skb, R_DNS, egress, l3_iface);
			return TC_ACT_UNSPEC;
		}
	}
	if (no_tcp)
		return TC_ACT_UNSPEC;

	r->tsval = 0;
	r->tsecr = 0;
	r->sack_left = 0;
	r->sack_right = 0;
	__u32 optlen = doff - 20;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 o = off + 20 < 0x1000 ? pkt_off(off + 20) : 0x1000;
	// Nearly every segment's options (Linux's, with timestamps on): NOP, NOP, timestamps
	// and nothing else. Read in place, as metro-core's TcpOptions::parse reads them.
	if (optlen == 12 && o < 0x1000 && data + o + 12 <= end &&
	    *(__u32 *)(data + o) == bpf_htonl(0x0101080a)) {
		r->tsval = bpf_ntohl(*(__u32 *)(data + o + 4));
		r->tsecr = bpf_ntohl(*(__u32 *)(data + o + 8));
		r->bits |= BIT_TIMESTAMP;
	} else {
		// Any other options: what the packet holds of them (all of it, short of a truncated
		// frame), parsed in scratch space. In the skb's linear area (the usual case), copied 4
		// bytes at a time in place (the area is a multiple of 4). Else the whole area in one
		// load (its length, 4 to 40, bounded on the register itself for the verifier); when
		// the packet ends inside it, 4 bytes at a time, as far as it goes (constant sizes
		// keep the verifier simple).
		__u32 got = 0;
		__u32 linear = 1;
		for (int k = 0; k < MAX_OPTS / 4; k++) {
			if (got >= optlen)
				break;
			void *p = data + o + k * 4;
			if (o >= 0x1000 || p + 4 > end) {
				linear = 0;
				got = 0;
				break;
			}
			*(__u32 *)&s->opts[k * 4] = *(__u32 *)p;
			got += 4;
		}
		if (!linear && optlen > 0) {
			__u32 m = optlen - 1;
			asm volatile("%[m] &= 63" : [m] "+r"(m));
			if (m < MAX_OPTS && bpf_skb_load_bytes(skb, off + 20, s->opts, m + 1) == 0)
				got = m + 1;
		}
		if (!linear && got == 0) {
			for (int k = 0; k < MAX_OPTS / 4; k++) {
				if (got >= optlen)
					break;
				if (bpf_skb_load_bytes(skb, off + 20 + k * 4, &s->opts[k * 4], 4) < 0)
					break;
				got += 4;
			}
		}
		if (got > 0)
			parse_options(s, got);
	}

	r->ts = bpf_ktime_get_ns();
	r->ifindex = ifindex;
	r->cgroup = 0;
	r->zero = 0;
	if (egress) {
		r->bits |= BIT_EGRESS;
		r->cgroup = bpf_skb_cgroup_id(skb);
	}
	// Copied into ring-buffer memory reserved here, once the record is whole (not built in
	// it: the frame may still go over whole until now, and a discarded reservation would
	// cost the reader a skip; nor held over the clock read and the cgroup lookup, since the
	// reader cannot pass a reserved record until it is submitted).
	struct record *out = bpf_ringbuf_reserve(&records, sizeof(*r), 0);
	if (!out) {
		count(C_RING_FULL);
		return TC_ACT_UNSPEC;
	}
	__builtin_memcpy(out, r, sizeof(*r));
	bpf_ringbuf_submit(out, wake_flag(sizeof(*r)));
	count(C_RECORDS);
	return TC_ACT_UNSPEC;
}

SEC("classifier")
int metro_ingress(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

SEC("classifier")
int metro_egress(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
