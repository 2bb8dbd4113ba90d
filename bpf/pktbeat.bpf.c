/* pktbeat's TC classifier: flows for all IP traffic, records for configured ports.
 *
 * Attached with clsact on ingress (pb_ingress) and egress (pb_egress); it
 * only observes and always returns TC_ACT_UNSPEC, so the next filter (or the
 * default action) decides the packet's fate.  On loopback user space attaches
 * ingress only, because every looped packet passes egress and then ingress.
 *
 * Per packet:
 *   1. link layer: Ethernet with up to two 802.1Q/802.1ad tags (an offloaded
 *      tag in skb->vlan_tci counts as the outer one) and PPPoE sessions, or
 *      none on L3 devices (tun, wireguard, ppp: the IP version comes from
 *      skb->protocol); the `ifaces` map, filled by user space, gives each
 *      device's header length;
 *   2. IPv4 (options skipped) or IPv6 (hop-by-hop, routing, destination
 *      options, AH and fragment headers walked), then TCP, UDP, ICMP, ICMPv6;
 *   3. tunnels: GRE (keys, sequence numbers, checksums; IP or Ethernet
 *      inside; ERSPAN I, II and III), VXLAN and GENEVE (UDP ports from the
 *      settings), IPv4/IPv6 in IPv4/IPv6.  The program tail-calls pb_decap,
 *      which parses the inner packet from step 1 (Ethernet) or 2 (IP), at
 *      most PB_MAX_ENCAP deep; each outer layer is remembered in the per-CPU
 *      scratch and counted as a flow of its own at the end;
 *   4. the flow table (`flows`, LRU) counts every IP packet, whatever its
 *      port, as the wire has it: a GSO/GRO super-packet counts as its
 *      segments (gso_segs, or its length over gso_size), each with the
 *      headers it will carry;
 *   5. the `ports` map says whether either port of the innermost packet
 *      belongs to a configured protocol; fragments always go to user space
 *      (only the first carries ports; GRE and IP-in-IP ones too, which user
 *      space opens once reassembled), ICMP when enabled;
 *   6. the record header is prepared in a per-CPU scratch buffer, and the
 *      emitter (pb_emit, a tail call) copies the L4 payload, up to snaplen,
 *      after it and writes it to the ring of the worker the flow hash
 *      selects, split in PB_CHUNK pieces when larger.
 *
 * Compile-time parameters (cflags): PB_WORKERS (rings, 1..PB_MAX_WORKERS),
 * PB_RING_PAGES, PB_MAX_FLOWS, PB_NCPUS, PB_MAX_IFACES, optionally PB_CHUNK.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/pkt_cls.h>

#include "record.h"

#ifndef PB_WORKERS
#define PB_WORKERS 1
#endif
#define PB_MAX_WORKERS 16
#if PB_WORKERS < 1 || PB_WORKERS > PB_MAX_WORKERS
#error "PB_WORKERS must be between 1 and PB_MAX_WORKERS"
#endif
#ifndef PB_RING_PAGES
#define PB_RING_PAGES 1024
#endif
#ifndef PB_MAX_FLOWS
#define PB_MAX_FLOWS 65536
#endif
#ifndef PB_NCPUS
#define PB_NCPUS 128
#endif
#ifndef PB_MAX_IFACES
#define PB_MAX_IFACES 256
#endif
#define PB_MAX_PORTS 4096
#define PB_FRAG_PORTS 4096
#define PB_MAX_IPV6_EXT 6

#define ETH_P_QINQ1 0x9100
#define ETH_P_ERSPAN2 0x88BE /* ERSPAN I and II (told apart by the GRE sequence bit) */
#define ETH_P_ERSPAN3 0x22EB
#define PPP_IP 0x0021
#define PPP_IPV6 0x0057

#define GRE_CSUM 0x8000
#define GRE_ROUTING 0x4000
#define GRE_KEY 0x2000
#define GRE_SEQ 0x1000
#define GRE_VERSION 0x0007
#define VXLAN_FLAG_VNI 0x08

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

/* ---- parsing state ------------------------------------------------------- */

struct pb_parse {
    /* First, so that 4-byte reads of the addresses are aligned on the stack. */
    u8 saddr[16];
    u8 daddr[16];
    u32 l4_off;           /* offset of the L4 header (of the fragment payload) */
    u32 end;              /* offset just past the IP datagram (padding excluded) */
    u32 payload_off;      /* offset of the L4 payload */
    u32 seq;
    u32 ack;
    u32 frag_id;
    u32 tunnel_id;        /* of the innermost encapsulation so far that has one */
    u16 sport;
    u16 dport;
    u16 window;
    u16 frag_off;
    u16 vlan_outer;
    u16 vlan_inner;
    u16 tunnel_kinds;     /* PB_TUN_* per 4 bits, outermost lowest */
    u8 tunnel_depth;      /* encapsulations around this packet */
    u8 family;
    u8 l4proto;
    u8 tcp_flags;
    u8 is_frag;
    u8 more_frags;
    u8 has_l4;            /* ports/ICMP header parsed (not a later fragment) */
    u8 has_mac;
    u8 icmp_type;
    u8 icmp_code;
    u8 vlans;
    u8 pad;
    u8 smac[6];
    u8 dmac[6];
};

/* One layer's contribution to the flow table, counted once the packet's
 * segments are known (so outer flows of a super-packet count them too). */
struct pb_layer {
    struct pb_flow_key key;
    u32 tunnel_id;
    u16 tunnel_kinds;
    u8 tunnel_depth;
    u8 side;              /* 0: sent by the key's "lo" endpoint */
    u8 has_mac;
    u8 tcp_flags;
    u8 icmp_type;
    u8 icmp_code;
    u8 mac[2][6];         /* source MAC of each side */
};

/* What pb_decap continues from: where the inner packet starts and the
 * outer layers met so far. */
struct pb_decap {
    struct pb_layer layers[PB_MAX_ENCAP]; /* outermost first */
    u8 outer_saddr[16];   /* the outermost IP header that carried a tunnel */
    u8 outer_daddr[16];
    u32 nlayers;
    u32 off;              /* offset of the inner packet */
    u32 tunnel_id;
    u32 slot;
    u32 link_len;
    u16 proto;            /* ETH_P_IP, ETH_P_IPV6, or ETH_P_TEB: an Ethernet frame */
    u16 tunnel_kinds;
    u8 tunnel_depth;
    u8 outer_family;
    u8 dir;
    u8 pad;
};

/* Where a tunnel's inner packet starts. */
struct pb_inner {
    u32 off;
    u32 id;
    u16 proto;            /* as pb_decap.proto */
    u8 kind;              /* PB_TUN_* */
    u8 pad;
};

/* ---- maps ---------------------------------------------------------------- */

BPF_ARRAY(settings, struct pb_settings, 1);
BPF_HASH(ports, struct pb_port_key, u32, PB_MAX_PORTS);
BPF_HASH(ifaces, u32, struct pb_iface, PB_MAX_IFACES);
BPF_PERCPU_ARRAY(counters, struct pb_counters, PB_MAX_IFACES);
BPF_TABLE("lru_hash", struct pb_flow_key, struct pb_flow, flows, PB_MAX_FLOWS);
/* A new flow entry is built here, not on the stack (512 bytes for everything). */
BPF_PERCPU_ARRAY(new_flow, struct pb_flow, 1);

/* The ports of a fragmented datagram, learnt from its first fragment, so
 * the later fragments (which carry no L4 header) count in the same flow.
 * A later fragment that finds nothing (first one lost, reordered, or
 * evicted from this LRU) counts in a port-less flow: PB_C_FRAG_NO_PORTS. */
struct pb_frag_key {
    u32 id;
    u8 family;
    u8 l4proto;
    u16 pad;
    u8 saddr[16];
    u8 daddr[16];
};
BPF_TABLE("lru_hash", struct pb_frag_key, u32, frag_ports, PB_FRAG_PORTS);

/* The record being built, with room for one chunk of payload, and the
 * decapsulation state.  Too big for the stack and for a per-CPU map value
 * (32 KB cap), so it is a plain array indexed by CPU: TC programs do not
 * migrate while they run, and one CPU runs one of them at a time. */
struct pb_job {
    u32 total;            /* L4 payload bytes of the packet */
    u32 captured;         /* of which to copy (snaplen) */
    u32 payload_start;    /* offset of the payload in the skb */
    u32 seq;
    u32 ring;
    u32 slot;
    u32 wake_every;
    u8 tcp_flags;
};
struct pb_scratch {
    struct pb_record rec; /* must be followed directly by data: both go to the ring as one */
    u8 data[PB_CHUNK];
    u32 since_wake;
    struct pb_job job;
    struct pb_decap decap;
};
BPF_ARRAY(scratch, struct pb_scratch, PB_NCPUS);
BPF_PROG_ARRAY(emitters, 1);
BPF_PROG_ARRAY(decappers, 1);

/* One ring per worker process; the flow hash picks one. */
BPF_RINGBUF_OUTPUT(ring0, PB_RING_PAGES);
#if PB_WORKERS > 1
BPF_RINGBUF_OUTPUT(ring1, PB_RING_PAGES);
#endif
#if PB_WORKERS > 2
BPF_RINGBUF_OUTPUT(ring2, PB_RING_PAGES);
#endif
#if PB_WORKERS > 3
BPF_RINGBUF_OUTPUT(ring3, PB_RING_PAGES);
#endif
#if PB_WORKERS > 4
BPF_RINGBUF_OUTPUT(ring4, PB_RING_PAGES);
#endif
#if PB_WORKERS > 5
BPF_RINGBUF_OUTPUT(ring5, PB_RING_PAGES);
#endif
#if PB_WORKERS > 6
BPF_RINGBUF_OUTPUT(ring6, PB_RING_PAGES);
#endif
#if PB_WORKERS > 7
BPF_RINGBUF_OUTPUT(ring7, PB_RING_PAGES);
#endif
#if PB_WORKERS > 8
BPF_RINGBUF_OUTPUT(ring8, PB_RING_PAGES);
#endif
#if PB_WORKERS > 9
BPF_RINGBUF_OUTPUT(ring9, PB_RING_PAGES);
#endif
#if PB_WORKERS > 10
BPF_RINGBUF_OUTPUT(ring10, PB_RING_PAGES);
#endif
#if PB_WORKERS > 11
BPF_RINGBUF_OUTPUT(ring11, PB_RING_PAGES);
#endif
#if PB_WORKERS > 12
BPF_RINGBUF_OUTPUT(ring12, PB_RING_PAGES);
#endif
#if PB_WORKERS > 13
BPF_RINGBUF_OUTPUT(ring13, PB_RING_PAGES);
#endif
#if PB_WORKERS > 14
BPF_RINGBUF_OUTPUT(ring14, PB_RING_PAGES);
#endif
#if PB_WORKERS > 15
BPF_RINGBUF_OUTPUT(ring15, PB_RING_PAGES);
#endif

static __always_inline int ring_output(u32 ring, void *data, u64 size, u64 flags)
{
    switch (ring) {
#if PB_WORKERS > 1
    case 1: return ring1.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 2
    case 2: return ring2.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 3
    case 3: return ring3.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 4
    case 4: return ring4.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 5
    case 5: return ring5.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 6
    case 6: return ring6.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 7
    case 7: return ring7.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 8
    case 8: return ring8.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 9
    case 9: return ring9.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 10
    case 10: return ring10.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 11
    case 11: return ring11.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 12
    case 12: return ring12.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 13
    case 13: return ring13.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 14
    case 14: return ring14.ringbuf_output(data, size, flags);
#endif
#if PB_WORKERS > 15
    case 15: return ring15.ringbuf_output(data, size, flags);
#endif
    default: return ring0.ringbuf_output(data, size, flags);
    }
}
/* ---- parsing ------------------------------------------------------------- */

static __always_inline void count(struct pb_counters *c, u32 which)
{
    if (c && which < PB_C_MAX)
        c->c[which]++;
}

static __always_inline u16 be16(u16 v) { return __builtin_bswap16(v); }
static __always_inline u32 be32(u32 v) { return __builtin_bswap32(v); }

static __always_inline u32 mix(u32 h, u32 v)
{
    h ^= v;
    h *= 0x9e3779b1;
    return h ^ (h >> 15);
}

static __always_inline int is_vlan(u16 proto)
{
    return proto == ETH_P_8021Q || proto == ETH_P_8021AD || proto == ETH_P_QINQ1;
}

/* One more encapsulation around the packet being parsed (the caller checked the depth). */
static __always_inline void push_tunnel(struct pb_parse *p, u32 kind, u32 id)
{
    p->tunnel_kinds |= (u16)((kind & 0xf) << (4 * (p->tunnel_depth & 3)));
    p->tunnel_depth++;
    if (id)
        p->tunnel_id = id;
}

/* The parse_* functions return the outcome counter of a packet that stops
 * there, or -1 to go on.  `*ethertype` is in host byte order.
 *
 * An Ethernet header at `off`: VLAN tags (the offloaded one first when
 * `offloaded_tag`, i.e. for the frame the device received), then a PPPoE
 * session header when there is one. */
static __always_inline int parse_eth(struct __sk_buff *skb, u32 off, struct pb_parse *p, u32 *l3_off,
                                     u16 *ethertype, int offloaded_tag, struct pb_counters *c)
{
    struct ethhdr eth;
    if (bpf_skb_load_bytes(skb, off, &eth, sizeof(eth)) < 0)
        return PB_C_MALFORMED;
    __builtin_memcpy(p->dmac, eth.h_dest, 6);
    __builtin_memcpy(p->smac, eth.h_source, 6);
    p->has_mac = 1;
    u16 proto = be16(eth.h_proto);
    off += ETH_HLEN;
    if (offloaded_tag && skb->vlan_present) {
        p->vlan_outer = skb->vlan_tci & 0x0fff;
        p->vlans = 1;
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (!is_vlan(proto))
            break;
        u16 tag[2];
        if (bpf_skb_load_bytes(skb, off, tag, sizeof(tag)) < 0)
            return PB_C_MALFORMED;
        if (p->vlans == 0)
            p->vlan_outer = be16(tag[0]) & 0x0fff;
        else if (p->vlans == 1)
            p->vlan_inner = be16(tag[0]) & 0x0fff;
        p->vlans++;
        proto = be16(tag[1]);
        off += 4;
    }
    if (is_vlan(proto) || p->vlans > 2)
        return PB_C_NOT_IP;
    if (proto == ETH_P_PPP_SES) {
        /* version/type 0x11, code 0, session id, length, then the PPP protocol. */
        u8 h[8];
        if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
            return PB_C_MALFORMED;
        if (h[0] != 0x11 || h[1] != 0)
            return PB_C_NOT_IP;
        u16 ppp = ((u16)h[6] << 8) | h[7];
        if (ppp == PPP_IP)
            proto = ETH_P_IP;
        else if (ppp == PPP_IPV6)
            proto = ETH_P_IPV6;
        else
            return PB_C_NOT_IP; /* LCP, IPCP, ...: the session's control traffic */
        if (p->tunnel_depth >= PB_MAX_ENCAP) {
            count(c, PB_C_TUNNEL_TOO_DEEP);
            return PB_C_NOT_IP;
        }
        push_tunnel(p, PB_TUN_PPPOE, ((u32)h[2] << 8) | h[3]);
        off += 8;
    }
    *l3_off = off;
    *ethertype = proto;
    return -1;
}

static __always_inline int parse_link(struct __sk_buff *skb, u32 link_len, struct pb_parse *p, u32 *l3_off,
                                      u16 *ethertype, struct pb_counters *c)
{
    if (link_len != ETH_HLEN) {
        /* No (or an unusual) link header: skb->protocol says what follows. */
        *l3_off = link_len;
        *ethertype = be16((u16)skb->protocol);
        return -1;
    }
    return parse_eth(skb, 0, p, l3_off, ethertype, 1, c);
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, u32 off, struct pb_parse *p)
{
    struct iphdr ip;
    if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
        return PB_C_MALFORMED;
    if (ip.version != 4 || ip.ihl < 5)
        return PB_C_MALFORMED;
    u32 ihl = ip.ihl * 4;
    u32 total = be16(ip.tot_len);
    if (total == 0)
        total = skb->len - off; /* BIG TCP: the length is in the skb only */
    if (total < ihl)
        return PB_C_MALFORMED;
    p->end = off + total;
    if (p->end > skb->len)
        p->end = skb->len;
    p->family = 4;
    p->l4proto = ip.protocol;
    __builtin_memcpy(p->saddr, &ip.saddr, 4);
    __builtin_memcpy(p->daddr, &ip.daddr, 4);
    u16 frag = be16(ip.frag_off);
    p->frag_off = (frag & 0x1fff) * 8;
    p->more_frags = (frag & 0x2000) ? 1 : 0;
    if (p->frag_off || p->more_frags) {
        p->is_frag = 1;
        p->frag_id = be16(ip.id);
    }
    p->l4_off = off + ihl;
    return -1;
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, u32 off, struct pb_parse *p)
{
    struct ipv6hdr ip6;
    if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
        return PB_C_MALFORMED;
    if (ip6.version != 6)
        return PB_C_MALFORMED;
    u32 plen = be16(ip6.payload_len);
    if (plen == 0)
        plen = skb->len - off - sizeof(ip6); /* jumbogram / BIG TCP */
    p->end = off + sizeof(ip6) + plen;
    if (p->end > skb->len)
        p->end = skb->len;
    p->family = 6;
    __builtin_memcpy(p->saddr, &ip6.saddr, 16);
    __builtin_memcpy(p->daddr, &ip6.daddr, 16);
    u8 next = ip6.nexthdr;
    u32 l4 = off + sizeof(ip6);
#pragma unroll
    for (int i = 0; i < PB_MAX_IPV6_EXT; i++) {
        if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS) {
            u8 h[2];
            if (bpf_skb_load_bytes(skb, l4, h, 2) < 0)
                return PB_C_MALFORMED;
            next = h[0];
            l4 += ((u32)h[1] + 1) * 8;
        } else if (next == IPPROTO_AH) {
            u8 h[2];
            if (bpf_skb_load_bytes(skb, l4, h, 2) < 0)
                return PB_C_MALFORMED;
            next = h[0];
            l4 += ((u32)h[1] + 2) * 4;
        } else if (next == IPPROTO_FRAGMENT) {
            struct { u8 next; u8 reserved; u16 off; u32 id; } fh;
            if (bpf_skb_load_bytes(skb, l4, &fh, sizeof(fh)) < 0)
                return PB_C_MALFORMED;
            next = fh.next;
            l4 += 8;
            u16 fo = be16(fh.off);
            if ((fo & 0xfff8) || (fo & 1)) {
                /* A real fragment: what follows is fragment data. */
                p->is_frag = 1;
                p->frag_off = fo & 0xfff8;
                p->more_frags = fo & 1;
                p->frag_id = be32(fh.id);
                break;
            }
            /* An atomic fragment (offset 0, no more): parse on. */
        } else {
            break;
        }
    }
    if (l4 > p->end)
        return PB_C_MALFORMED;
    p->l4proto = next;
    p->l4_off = l4;
    return -1;
}

static __always_inline int parse_l4(struct __sk_buff *skb, struct pb_parse *p)
{
    u32 l4 = p->l4_off;
    if (p->is_frag && p->frag_off) {
        p->payload_off = l4;
        return -1; /* a later fragment: no L4 header */
    }
    if (p->l4proto == IPPROTO_TCP) {
        struct {
            u16 sport;
            u16 dport;
            u32 seq;
            u32 ack;
            u8 doff;
            u8 flags;
            u16 window;
        } th;
        if (bpf_skb_load_bytes(skb, l4, &th, sizeof(th)) < 0)
            return PB_C_MALFORMED;
        u32 doff = (th.doff >> 4) * 4;
        if (doff < 20)
            return PB_C_MALFORMED;
        p->sport = be16(th.sport);
        p->dport = be16(th.dport);
        p->seq = be32(th.seq);
        p->ack = be32(th.ack);
        p->tcp_flags = th.flags;
        p->window = be16(th.window);
        p->payload_off = l4 + doff;
        if (!p->is_frag && p->payload_off > p->end)
            return PB_C_MALFORMED;
    } else if (p->l4proto == IPPROTO_UDP) {
        u16 uh[3];
        if (bpf_skb_load_bytes(skb, l4, uh, sizeof(uh)) < 0)
            return PB_C_MALFORMED;
        p->sport = be16(uh[0]);
        p->dport = be16(uh[1]);
        u32 ulen = be16(uh[2]);
        if (!p->is_frag && ulen >= 8 && l4 + ulen <= p->end)
            p->end = l4 + ulen;
        p->payload_off = l4 + 8;
        if (!p->is_frag && p->payload_off > p->end)
            return PB_C_MALFORMED;
    } else if (p->l4proto == IPPROTO_ICMP || p->l4proto == IPPROTO_ICMPV6) {
        u8 ih[4];
        if (p->end < l4 + 4)
            return PB_C_MALFORMED;
        if (bpf_skb_load_bytes(skb, l4, ih, 4) < 0)
            return PB_C_MALFORMED;
        p->icmp_type = ih[0];
        p->icmp_code = ih[1];
        p->payload_off = l4; /* the ICMP message itself is the payload */
    } else {
        p->payload_off = l4;
        return -1;
    }
    p->has_l4 = 1;
    return -1;
}

/* The IP packet at `off` and its L4 header. */
static __always_inline int parse_network(struct __sk_buff *skb, u32 off, u16 proto, struct pb_parse *p)
{
    int outcome;
    if (proto == ETH_P_IP)
        outcome = parse_ipv4(skb, off, p);
    else if (proto == ETH_P_IPV6)
        outcome = parse_ipv6(skb, off, p);
    else
        return PB_C_NOT_IP;
    if (outcome >= 0)
        return outcome;
    return parse_l4(skb, p);
}

/* ---- tunnels ------------------------------------------------------------- */

static __always_inline int port_listed(const u16 *ports, u16 port)
{
#pragma unroll
    for (int i = 0; i < PB_MAX_TUNNEL_PORTS; i++) {
        u16 listed = ports[i];
        if (listed == 0)
            return 0;
        if (listed == port)
            return 1;
    }
    return 0;
}

static __always_inline int gre_inner(struct __sk_buff *skb, struct pb_parse *p, struct pb_inner *in)
{
    u16 h[2];
    if (bpf_skb_load_bytes(skb, p->l4_off, h, sizeof(h)) < 0)
        return -1;
    u16 flags = be16(h[0]), proto = be16(h[1]);
    if (flags & (GRE_VERSION | GRE_ROUTING))
        return -1; /* PPTP's enhanced GRE, or RFC 1701 source routes */
    u32 off = p->l4_off + 4;
    if (flags & GRE_CSUM)
        off += 4;
    if (flags & GRE_KEY) {
        u32 key;
        if (bpf_skb_load_bytes(skb, off, &key, sizeof(key)) < 0)
            return -1;
        in->id = be32(key);
        off += 4;
    }
    if (flags & GRE_SEQ)
        off += 4;
    if (proto == ETH_P_IP || proto == ETH_P_IPV6 || proto == ETH_P_TEB) {
        in->kind = PB_TUN_GRE;
        in->proto = proto;
        in->off = off;
        return 1;
    }
    u8 e[12];
    if (proto == ETH_P_ERSPAN2 && !(flags & GRE_SEQ)) {
        in->kind = PB_TUN_ERSPAN1; /* no ERSPAN header at all */
        in->proto = ETH_P_TEB;
        in->off = off;
        return 1;
    }
    if (proto == ETH_P_ERSPAN2) {
        if (bpf_skb_load_bytes(skb, off, e, 8) < 0 || (e[0] >> 4) != 1)
            return -1;
        in->kind = PB_TUN_ERSPAN2;
        in->id = ((u32)(e[2] & 0x03) << 8) | e[3];
        in->proto = ETH_P_TEB;
        in->off = off + 8;
        return 1;
    }
    if (proto == ETH_P_ERSPAN3) {
        if (bpf_skb_load_bytes(skb, off, e, 12) < 0 || (e[0] >> 4) != 2)
            return -1;
        in->kind = PB_TUN_ERSPAN3;
        in->id = ((u32)(e[2] & 0x03) << 8) | e[3];
        in->proto = ETH_P_TEB;
        in->off = off + 12 + ((e[11] & 0x01) ? 8 : 0); /* O bit: a platform-specific subheader */
        return 1;
    }
    return -1;
}

static __always_inline int vxlan_inner(struct __sk_buff *skb, struct pb_parse *p, struct pb_inner *in)
{
    u8 v[8];
    if (bpf_skb_load_bytes(skb, p->payload_off, v, sizeof(v)) < 0 || !(v[0] & VXLAN_FLAG_VNI))
        return -1;
    in->kind = PB_TUN_VXLAN;
    in->id = ((u32)v[4] << 16) | ((u32)v[5] << 8) | v[6];
    in->proto = ETH_P_TEB;
    in->off = p->payload_off + 8;
    return 1;
}

static __always_inline int geneve_inner(struct __sk_buff *skb, struct pb_parse *p, struct pb_inner *in)
{
    u8 g[8];
    if (bpf_skb_load_bytes(skb, p->payload_off, g, sizeof(g)) < 0 || (g[0] >> 6) != 0)
        return -1;
    u16 proto = ((u16)g[2] << 8) | g[3];
    if (proto != ETH_P_TEB && proto != ETH_P_IP && proto != ETH_P_IPV6)
        return -1;
    in->kind = PB_TUN_GENEVE;
    in->id = ((u32)g[4] << 16) | ((u32)g[5] << 8) | g[6];
    in->proto = proto;
    in->off = p->payload_off + 8 + (u32)(g[0] & 0x3f) * 4;
    return 1;
}

/* 1 when `p` carries a tunnel pktbeat follows (`in` says where its inner
 * packet starts), -1 for a tunnel header it does not follow, 0 otherwise. */
static __always_inline int tunnel_of(struct __sk_buff *skb, struct pb_parse *p, struct pb_settings *cfg,
                                     struct pb_inner *in)
{
    u8 l4 = p->l4proto;
    if (p->is_frag)
        return 0; /* user space reassembles the datagram (fragments always go there) */
    if (l4 == IPPROTO_IPIP || l4 == IPPROTO_IPV6) {
        in->kind = l4 == IPPROTO_IPIP ? PB_TUN_IPIP : PB_TUN_IP6;
        in->proto = l4 == IPPROTO_IPIP ? ETH_P_IP : ETH_P_IPV6;
        in->off = p->l4_off;
        return 1;
    }
    if (l4 == IPPROTO_GRE)
        return gre_inner(skb, p, in);
    if (l4 == IPPROTO_UDP && p->has_l4) {
        if (port_listed(cfg->vxlan_ports, p->dport))
            return vxlan_inner(skb, p, in);
        if (port_listed(cfg->geneve_ports, p->dport))
            return geneve_inner(skb, p, in);
    }
    return 0;
}

/* ---- flows ----------------------------------------------------------------- */

/* < 0, 0, > 0 comparing two 16-byte addresses in network byte order. */
static __always_inline int addr_cmp(const u8 *a, const u8 *b)
{
#pragma unroll
    for (int i = 0; i < 16; i += 4) {
        u32 x = be32(*(const u32 *)(a + i));
        u32 y = be32(*(const u32 *)(b + i));
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

static __always_inline void frag_key(struct pb_frag_key *k, struct pb_parse *p)
{
    __builtin_memset(k, 0, sizeof(*k));
    k->id = p->frag_id;
    k->family = p->family;
    k->l4proto = p->l4proto;
    __builtin_memcpy(k->saddr, p->saddr, 16);
    __builtin_memcpy(k->daddr, p->daddr, 16);
}

/* The tunnel a packet travels in, the same both ways: kinds, id and the
 * outermost addresses (XOR and sum are symmetric).  Never 0. */
static __always_inline u32 tunnel_zone(struct pb_parse *p, struct pb_decap *t)
{
    u32 h = mix(0x7f4a7c15, (u32)p->tunnel_kinds | ((u32)p->tunnel_depth << 16));
    h = mix(h, p->tunnel_id);
    if (t && t->outer_family) {
#pragma unroll
        for (int i = 0; i < 16; i += 4) {
            u32 a = *(u32 *)(t->outer_saddr + i);
            u32 b = *(u32 *)(t->outer_daddr + i);
            h = mix(h, a ^ b);
            h = mix(h, a + b);
        }
    }
    return h ? h : 1;
}

/* The flow-table view of the packet `p` (inside the tunnels `t` has met). */
static __always_inline void describe_layer(struct pb_parse *p, struct pb_decap *t, struct pb_layer *l,
                                           struct pb_counters *c)
{
    u16 sport = p->sport, dport = p->dport;
    if (p->is_frag && (p->l4proto == IPPROTO_TCP || p->l4proto == IPPROTO_UDP)) {
        struct pb_frag_key fk;
        frag_key(&fk, p);
        if (p->has_l4) {
            u32 pp = ((u32)sport << 16) | dport;
            frag_ports.update(&fk, &pp);
        } else {
            u32 *pp = frag_ports.lookup(&fk);
            if (pp) {
                sport = *pp >> 16;
                dport = *pp & 0xffff;
            } else {
                count(c, PB_C_FRAG_NO_PORTS);
            }
        }
    }
    struct pb_flow_key *key = &l->key;
    __builtin_memset(l, 0, sizeof(*l));
    key->family = p->family;
    key->l4proto = p->l4proto;
    key->vlan_outer = p->vlan_outer;
    key->vlan_inner = p->vlan_inner;
    if (p->tunnel_depth) {
        key->zone = tunnel_zone(p, t);
        l->tunnel_id = p->tunnel_id;
        l->tunnel_kinds = p->tunnel_kinds;
        l->tunnel_depth = p->tunnel_depth;
    }
    int icmp = p->l4proto == IPPROTO_ICMP || p->l4proto == IPPROTO_ICMPV6;
    if (icmp)
        sport = dport = 0; /* and icmp_id stays 0: all ICMP between two hosts is one flow, as in Packetbeat */
    int cmp = addr_cmp(p->saddr, p->daddr);
    u8 side = (cmp > 0 || (cmp == 0 && sport > dport)) ? 1 : 0;
    l->side = side;
    if (side == 0) {
        __builtin_memcpy(key->addr_lo, p->saddr, 16);
        __builtin_memcpy(key->addr_hi, p->daddr, 16);
        key->port_lo = sport;
        key->port_hi = dport;
        __builtin_memcpy(l->mac[0], p->smac, 6);
        __builtin_memcpy(l->mac[1], p->dmac, 6);
    } else {
        __builtin_memcpy(key->addr_lo, p->daddr, 16);
        __builtin_memcpy(key->addr_hi, p->saddr, 16);
        key->port_lo = dport;
        key->port_hi = sport;
        __builtin_memcpy(l->mac[1], p->smac, 6);
        __builtin_memcpy(l->mac[0], p->dmac, 6);
    }
    l->has_mac = p->has_mac;
    l->tcp_flags = p->tcp_flags;
    l->icmp_type = icmp ? p->icmp_type : 0;
    l->icmp_code = icmp ? p->icmp_code : 0;
}

/* Adds `segs` packets and `bytes` wire bytes to the layer's flow. */
static __always_inline void account_flow(struct pb_layer *l, struct pb_decap *t, u32 segs, u64 bytes, u64 now,
                                         struct pb_counters *c)
{
    u8 side = l->side & 1;
    struct pb_flow *f = flows.lookup(&l->key);
    if (!f) {
        u32 zero = 0;
        struct pb_flow *init = new_flow.lookup(&zero);
        if (!init) {
            count(c, PB_C_FLOW_FAILED);
            return;
        }
        __builtin_memset(init, 0, sizeof(*init));
        init->first_ns = now;
        init->last_ns = now;
        init->packets[side] = segs;
        init->bytes[side] = bytes;
        init->tcp_flags = l->tcp_flags;
        init->first_side = side;
        init->has_mac = l->has_mac;
        init->icmp_type = l->icmp_type;
        init->icmp_code = l->icmp_code;
        __builtin_memcpy(init->mac, l->mac, sizeof(init->mac));
        if (l->tunnel_depth) {
            init->tunnel_id = l->tunnel_id;
            init->tunnel_kinds = l->tunnel_kinds;
            init->tunnel_depth = l->tunnel_depth;
            if (t && t->outer_family) {
                /* The outer source carried this side's packet. */
                init->outer_family = t->outer_family;
                if (side == 0) {
                    __builtin_memcpy(init->outer[0], t->outer_saddr, 16);
                    __builtin_memcpy(init->outer[1], t->outer_daddr, 16);
                } else {
                    __builtin_memcpy(init->outer[1], t->outer_saddr, 16);
                    __builtin_memcpy(init->outer[0], t->outer_daddr, 16);
                }
            }
        }
        if (flows.insert(&l->key, init) == 0) { /* BPF_NOEXIST: never overwrite another CPU's new entry */
            count(c, PB_C_FLOW_NEW);
            return;
        }
        /* Another CPU created it first (or the update failed): add to it. */
        f = flows.lookup(&l->key);
        if (!f) {
            count(c, PB_C_FLOW_FAILED);
            return;
        }
    }
    __sync_fetch_and_add(&f->packets[side], segs);
    __sync_fetch_and_add(&f->bytes[side], bytes);
    if (f->last_ns < now)
        f->last_ns = now;
    if ((f->tcp_flags | l->tcp_flags) != f->tcp_flags)
        f->tcp_flags |= l->tcp_flags;
    if ((l->key.l4proto == IPPROTO_ICMP || l->key.l4proto == IPPROTO_ICMPV6) && side == f->first_side) {
        /* The latest message of the source side names the flow's ICMP type, as in Packetbeat. */
        f->icmp_type = l->icmp_type;
        f->icmp_code = l->icmp_code;
    }
}

/* The outer layers of a decapsulated packet, each a flow of its own. */
static __always_inline void account_outer_layers(struct pb_decap *t, u32 segs, u64 bytes, u64 now,
                                                 struct pb_counters *c)
{
#pragma unroll
    for (int i = 0; i < PB_MAX_ENCAP; i++) {
        if (i >= t->nlayers)
            break;
        account_flow(&t->layers[i], t, segs, bytes, now, c);
    }
}

/* The wire packets an skb stands for: its GSO/GRO segment count (set by
 * the stack, or derived from gso_size when a device such as tun with a
 * virtio-net header left it 0), at least 1.  `hdr`: the header bytes each
 * segment carries. */
static __always_inline u32 wire_segments(struct __sk_buff *skb, u32 hdr)
{
    u32 segs = skb->gso_segs;
    if (segs)
        return segs;
    u32 size = skb->gso_size;
    if (size == 0 || skb->len <= hdr + size)
        return 1;
    return (skb->len - hdr + size - 1) / size;
}

/* Counts one run of the program (every run counts exactly once). */
static __always_inline void count_run(struct pb_counters *c, u32 segs, u64 bytes)
{
    if (!c)
        return;
    c->c[PB_C_SKBS]++;
    c->c[PB_C_SEEN] += segs;
    c->c[PB_C_BYTES] += bytes;
    if (segs > 1)
        c->c[PB_C_GSO]++;
}

/* ---- records --------------------------------------------------------------- */

/* The same for both directions: XOR and sum of the endpoints are symmetric.
 * Also used by bpf/sockets.bpf.c to send a socket's process to the worker
 * that decodes its packets: the two must agree. */
static __always_inline u32 pb_tuple_hash(const u8 *saddr, const u8 *daddr, u16 sport, u16 dport, int by_ports)
{
    u32 h = 0x2545f491;
#pragma unroll
    for (int i = 0; i < 16; i += 4) {
        u32 a = *(const u32 *)(saddr + i);
        u32 b = *(const u32 *)(daddr + i);
        h = mix(h, a ^ b);
        h = mix(h, a + b);
    }
    if (by_ports) {
        h = mix(h, (u32)(sport ^ dport) | ((u32)(sport + dport) << 16));
        h = mix(h, IPPROTO_TCP);
    }
    return h;
}

/* TCP by 5-tuple; UDP, ICMP and fragments by address pair, so the pieces
 * of a fragmented datagram and its exchange meet in one worker. */
static __always_inline u32 flow_hash(struct pb_parse *p)
{
    return pb_tuple_hash(p->saddr, p->daddr, p->sport, p->dport, p->l4proto == IPPROTO_TCP && !p->is_frag);
}

static __always_inline int port_matches(struct pb_parse *p)
{
    struct pb_port_key k = {.l4proto = p->l4proto, .pad = 0, .port = p->dport};
    if (ports.lookup(&k))
        return 1;
    k.port = p->sport;
    return ports.lookup(&k) != NULL;
}

/* Fills the record header in the per-CPU scratch and the facts the emitter
 * needs, then tail-calls it.  The emitter is a separate program so that the
 * verifier checks its chunk loop once, not once per parsing path. */
static __always_inline int prepare(struct __sk_buff *skb, struct pb_parse *p, struct pb_decap *t, u64 now, u32 dir,
                                   u32 l3_device, u32 slot, struct pb_settings *cfg)
{
    u32 cpu = bpf_get_smp_processor_id();
    struct pb_scratch *s = scratch.lookup(&cpu);
    if (!s)
        return PB_C_EMIT_FAILED;
    u32 total = p->end > p->payload_off ? p->end - p->payload_off : 0;
    u32 snaplen = cfg->snaplen;
    if (snaplen > PB_MAX_SNAPLEN)
        snaplen = PB_MAX_SNAPLEN;
    u32 hash = flow_hash(p);

    struct pb_record *r = &s->rec;
    r->ts_ns = now;
    r->ifindex = skb->ifindex;
    r->wire_len = skb->len;
    r->seq = p->seq;
    r->ack = p->ack;
    r->frag_id = p->frag_id;
    r->missing = 0;
    r->flow_hash = hash;
    r->sport = p->sport;
    r->dport = p->dport;
    r->window = p->window;
    r->payload_len = 0;
    r->payload_off = 0;
    r->frag_off = p->frag_off;
    r->vlan = p->vlan_outer;
    r->direction = dir;
    r->family = p->family;
    r->l4proto = p->l4proto;
    r->tcp_flags = p->tcp_flags;
    __builtin_memcpy(r->saddr, p->saddr, 16);
    __builtin_memcpy(r->daddr, p->daddr, 16);
    r->tunnel_id = p->tunnel_id;
    r->tunnel_kinds = p->tunnel_kinds;
    r->tunnel_depth = p->tunnel_depth;
    if (t && t->outer_family) {
        r->outer_family = t->outer_family;
        __builtin_memcpy(r->outer_saddr, t->outer_saddr, 16);
        __builtin_memcpy(r->outer_daddr, t->outer_daddr, 16);
    } else {
        r->outer_family = 0;
        __builtin_memset(r->outer_saddr, 0, 16);
        __builtin_memset(r->outer_daddr, 0, 16);
    }
    u16 flags = 0;
    if (p->is_frag)
        flags |= PB_F_FRAGMENT | (p->more_frags ? PB_F_MORE_FRAGS : 0);
    if (l3_device)
        flags |= PB_F_L3_DEVICE;
    if (p->vlans)
        flags |= PB_F_VLAN;
    if (p->tunnel_depth)
        flags |= PB_F_TUNNEL;
    r->flags = flags;

    s->job.total = total;
    s->job.captured = total < snaplen ? total : snaplen;
    s->job.payload_start = p->payload_off;
    s->job.seq = p->seq;
    s->job.ring = hash % PB_WORKERS;
    s->job.slot = slot;
    s->job.wake_every = cfg->wake_every;
    s->job.tcp_flags = p->tcp_flags;
    emitters.call(skb, 0);
    return PB_C_EMIT_FAILED; /* only reached when the tail call failed */
}

/* The emitter: copies the payload prepared by `prepare` into the ring, in
 * PB_CHUNK pieces.  Entered only by tail call from pb_ingress/pb_egress. */
int pb_emit(struct __sk_buff *skb)
{
    u32 cpu = bpf_get_smp_processor_id();
    struct pb_scratch *s = scratch.lookup(&cpu);
    if (!s)
        return TC_ACT_UNSPEC;
    u32 slot = s->job.slot;
    struct pb_counters *c = counters.lookup(&slot);
    struct pb_record *r = &s->rec;
    u32 captured = s->job.captured;
    u32 total = s->job.total;
    u16 flags = r->flags;
    int outcome = PB_C_SENT;
    if (captured < total)
        count(c, PB_C_TRUNCATED);

    for (int i = 0; i < PB_MAX_CHUNKS; i++) {
        u32 off = (u32)i * PB_CHUNK;
        if (i > 0 && off >= captured)
            break;
        /* 64-bit so the verifier sees the same register checked and used. */
        u64 len = captured > off ? captured - off : 0;
        if (len > PB_CHUNK)
            len = PB_CHUNK;
        u16 rflags = flags;
        if (off + len >= captured) {
            rflags |= PB_F_LAST_CHUNK;
            if (captured < total) {
                rflags |= PB_F_TRUNCATED;
                r->missing = total - captured;
            }
        }
        /* SYN belongs to the first piece, FIN/RST to the last, as if the
         * sender had sent the pieces as separate segments. */
        u8 tflags = s->job.tcp_flags;
        if (off > 0)
            tflags &= ~TCP_SYN;
        if (!(rflags & PB_F_LAST_CHUNK))
            tflags &= ~(TCP_FIN | TCP_RST);
        r->tcp_flags = tflags;
        r->seq = s->job.seq + off;
        r->payload_off = off;
        r->payload_len = len;
        r->flags = rflags;
        if (len >= 1) {
            /* Hide what the compiler knows about len, so that it tests the
             * very register it passes (the verifier needs 1 <= len <= size). */
            asm volatile("" : "+r"(len));
            if (len < 1 || len > PB_CHUNK) {
                outcome = PB_C_LOAD_FAILED;
                break;
            }
            if (bpf_skb_load_bytes(skb, s->job.payload_start + off, s->data, len) < 0) {
                outcome = PB_C_LOAD_FAILED;
                break;
            }
        }
        u64 wake = BPF_RB_NO_WAKEUP;
        s->since_wake++;
        if (s->since_wake >= s->job.wake_every) {
            s->since_wake = 0;
            wake = BPF_RB_FORCE_WAKEUP;
            count(c, PB_C_WAKEUPS);
        }
        /* A failed reserve is either a full ring or, since the ring lock became a
         * resilient spinlock (Linux 6.16), a lost race with another CPU writing
         * the same ring: one retry recovers the second kind. */
        if (ring_output(s->job.ring, r, sizeof(struct pb_record) + len, wake) < 0 &&
            ring_output(s->job.ring, r, sizeof(struct pb_record) + len, wake) < 0) {
            outcome = PB_C_RING_FULL;
            break;
        }
        count(c, PB_C_EMITTED);
    }
    count(c, outcome);
    return TC_ACT_UNSPEC;
}
/* ---- the end of every packet --------------------------------------------------- */

/* A packet that stopped before its innermost IP layer was parsed (`outcome`):
 * counted, and so are the outer layers already met. */
static __always_inline int stop(struct __sk_buff *skb, struct pb_decap *t, struct pb_settings *cfg,
                                struct pb_counters *c, int outcome)
{
    u32 segs = skb->gso_segs ? skb->gso_segs : 1;
    u64 bytes = skb->len;
    count_run(c, segs, bytes);
    if (t && cfg && cfg->flows)
        account_outer_layers(t, segs, bytes, bpf_ktime_get_boot_ns(), c);
    count(c, outcome);
    return TC_ACT_UNSPEC;
}

/* The innermost packet `p` is parsed: count it (and its outer layers) in the
 * flow table, decide whether user space wants it, and hand it over. */
static __always_inline int finish(struct __sk_buff *skb, struct pb_parse *p, struct pb_decap *t,
                                  struct pb_settings *cfg, struct pb_counters *c, u32 dir, u32 slot, u32 link_len)
{
    /* Every segment carries the headers up to the innermost payload. */
    u32 hdr = p->payload_off;
    u32 segs = wire_segments(skb, hdr);
    u64 bytes = skb->len + (u64)(segs - 1) * hdr;
    count_run(c, segs, bytes);
    if (p->tunnel_depth)
        count(c, PB_C_DECAPSULATED);

    u64 now = bpf_ktime_get_boot_ns();
    if (cfg->flows) {
        if (t)
            account_outer_layers(t, segs, bytes, now, c);
        struct pb_layer l;
        describe_layer(p, t, &l, c);
        account_flow(&l, t, segs, bytes, now, c);
    }

    u8 l4 = p->l4proto;
    int pass;
    if (p->is_frag) {
        /* and those of GRE and IP-in-IP, which user space opens once reassembled */
        pass = l4 == IPPROTO_TCP || l4 == IPPROTO_UDP || l4 == IPPROTO_ICMP || l4 == IPPROTO_ICMPV6 ||
               (cfg->decap && (l4 == IPPROTO_GRE || l4 == IPPROTO_IPIP || l4 == IPPROTO_IPV6));
        if (pass)
            count(c, PB_C_FRAGMENT);
    } else if (l4 == IPPROTO_TCP || l4 == IPPROTO_UDP) {
        pass = port_matches(p);
    } else if (l4 == IPPROTO_ICMP || l4 == IPPROTO_ICMPV6) {
        pass = cfg->icmp;
    } else {
        count(c, PB_C_OTHER_L4);
        return TC_ACT_UNSPEC;
    }
    if (!pass) {
        count(c, PB_C_UNMATCHED);
        return TC_ACT_UNSPEC;
    }
    count(c, PB_C_MATCHED);
    if (p->is_frag)
        p->payload_off = p->l4_off; /* user space reassembles from the raw IP payload */
    if (l4 == IPPROTO_TCP && !p->is_frag && p->end <= p->payload_off &&
        !(p->tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST))) {
        count(c, PB_C_NO_PAYLOAD);
        return TC_ACT_UNSPEC;
    }
    /* On success the emitter counts the outcome and returns for us. */
    count(c, prepare(skb, p, t, now, dir, link_len == 0, slot, cfg));
    return TC_ACT_UNSPEC;
}

/* `p` is parsed: go inside the tunnel it carries (pb_decap, by tail call),
 * or finish here.  `t` is the decapsulation state, NULL at the outermost layer. */
static __always_inline int descend(struct __sk_buff *skb, struct pb_parse *p, struct pb_decap *t,
                                   struct pb_settings *cfg, struct pb_counters *c, u32 dir, u32 slot, u32 link_len)
{
    struct pb_inner in = {};
    int tunnel = cfg->decap ? tunnel_of(skb, p, cfg, &in) : 0;
    if (tunnel < 0) {
        count(c, PB_C_TUNNEL_NOT_FOLLOWED);
    } else if (tunnel > 0 && p->tunnel_depth >= PB_MAX_ENCAP) {
        count(c, PB_C_TUNNEL_TOO_DEEP);
    } else if (tunnel > 0) {
        struct pb_decap *next = t;
        if (!next) {
            u32 cpu = bpf_get_smp_processor_id();
            struct pb_scratch *s = scratch.lookup(&cpu);
            if (s) {
                next = &s->decap;
                next->nlayers = 0;
                next->outer_family = 0;
                next->dir = dir;
                next->slot = slot;
                next->link_len = link_len;
            }
        }
        u32 n = next ? next->nlayers : PB_MAX_ENCAP;
        if (n < PB_MAX_ENCAP) {
            describe_layer(p, next, &next->layers[n], c);
            u8 outer_known = next->outer_family;
            if (!outer_known) {
                next->outer_family = p->family;
                __builtin_memcpy(next->outer_saddr, p->saddr, 16);
                __builtin_memcpy(next->outer_daddr, p->daddr, 16);
            }
            next->nlayers = n + 1;
            next->off = in.off;
            next->proto = in.proto;
            next->tunnel_kinds = p->tunnel_kinds;
            next->tunnel_depth = p->tunnel_depth;
            next->tunnel_id = p->tunnel_id;
            /* push_tunnel's effect, for the inner packet */
            next->tunnel_kinds |= (u16)((in.kind & 0xf) << (4 * (p->tunnel_depth & 3)));
            next->tunnel_depth++;
            if (in.id)
                next->tunnel_id = in.id;
            decappers.call(skb, 0);
            /* The tail call failed: the packet ends at this layer. */
            next->nlayers = n;
            if (!outer_known)
                next->outer_family = 0;
        }
        count(c, PB_C_TUNNEL_NOT_FOLLOWED);
    }
    return finish(skb, p, t, cfg, c, dir, slot, link_len);
}

/* ---- entry points ----------------------------------------------------------- */

static __always_inline int handle(struct __sk_buff *skb, u32 dir)
{
    u32 ifindex = skb->ifindex;
    u32 slot = 0, link_len = ETH_HLEN;
    struct pb_iface *iface = ifaces.lookup(&ifindex);
    if (iface) {
        slot = iface->slot;
        link_len = iface->link_len;
    }
    struct pb_counters *c = counters.lookup(&slot);
    u32 zero = 0;
    struct pb_settings *cfg = settings.lookup(&zero);
    if (!cfg)
        return stop(skb, NULL, NULL, c, PB_C_EMIT_FAILED); /* cannot happen: an array always has entry 0 */

    struct pb_parse p;
    __builtin_memset(&p, 0, sizeof(p));
    u32 l3_off = 0;
    u16 proto = 0;
    int outcome = parse_link(skb, link_len, &p, &l3_off, &proto, c);
    if (outcome < 0)
        outcome = parse_network(skb, l3_off, proto, &p);
    if (outcome >= 0)
        return stop(skb, NULL, cfg, c, outcome);
    return descend(skb, &p, NULL, cfg, c, dir, slot, link_len);
}

int pb_ingress(struct __sk_buff *skb)
{
    return handle(skb, PB_DIR_INGRESS);
}

int pb_egress(struct __sk_buff *skb)
{
    return handle(skb, PB_DIR_EGRESS);
}

/* The inner packet of a tunnel: entered only by tail call from pb_ingress,
 * pb_egress or itself, with the state `descend` left in the scratch. */
int pb_decap(struct __sk_buff *skb)
{
    u32 cpu = bpf_get_smp_processor_id();
    struct pb_scratch *s = scratch.lookup(&cpu);
    if (!s)
        return TC_ACT_UNSPEC;
    struct pb_decap *t = &s->decap;
    u32 slot = t->slot;
    struct pb_counters *c = counters.lookup(&slot);
    u32 zero = 0;
    struct pb_settings *cfg = settings.lookup(&zero);
    if (!cfg)
        return stop(skb, t, NULL, c, PB_C_EMIT_FAILED);

    struct pb_parse p;
    __builtin_memset(&p, 0, sizeof(p));
    p.tunnel_id = t->tunnel_id;
    p.tunnel_kinds = t->tunnel_kinds;
    p.tunnel_depth = t->tunnel_depth;
    u32 l3_off = t->off;
    u16 proto = t->proto;
    int outcome = -1;
    if (proto == ETH_P_TEB)
        outcome = parse_eth(skb, t->off, &p, &l3_off, &proto, 0, c);
    if (outcome < 0)
        outcome = parse_network(skb, l3_off, proto, &p);
    if (outcome >= 0)
        return stop(skb, t, cfg, c, outcome);
    return descend(skb, &p, t, cfg, c, t->dir, slot, t->link_len);
}
