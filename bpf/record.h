/* The one definition of what the kernel program shares with user space.
 *
 * Every record in a ring buffer is a `struct pb_record` followed by
 * `payload_len` payload bytes, or a socket record of process attribution
 * (bpf/sockets.h), told apart by bit 63 of the first u64: keep `ts_ns`
 * first (a boot-time stamp never sets it).  agent/capture/record.py decodes it (and the
 * map structs below) with struct formats that tests/capture/test_record_layout.py
 * checks against this file by compiling it, so change both together and bump
 * PB_RECORD_VERSION.
 */
#ifndef PKTBEAT_RECORD_H
#define PKTBEAT_RECORD_H

#define PB_RECORD_VERSION 3

/* Bytes of payload one record can carry.  A packet whose captured payload is
 * larger is split over several records with increasing `payload_off`; TCP
 * records carry `seq` already advanced by that offset.  The default fits the
 * largest snaplen in one record; tests build the program with a small value
 * to exercise splitting. */
#ifndef PB_CHUNK
#define PB_CHUNK 65535
#endif
/* The kernel never copies more than this much payload from one packet. */
#define PB_MAX_SNAPLEN 65535
#define PB_MAX_CHUNKS ((PB_MAX_SNAPLEN + PB_CHUNK - 1) / PB_CHUNK)

/* pb_record.flags */
#define PB_F_TRUNCATED   0x0001 /* payload beyond snaplen was not copied: the last
                                   record of the packet says how many bytes in `missing` */
#define PB_F_FRAGMENT    0x0002 /* an IP fragment: payload is the raw IP payload
                                   (after the IPv6 fragment header); ports are zero
                                   unless this is the first fragment */
#define PB_F_MORE_FRAGS  0x0004 /* IPv4 MF bit / IPv6 M bit */
#define PB_F_LAST_CHUNK  0x0008 /* the last record of this packet */
#define PB_F_L3_DEVICE   0x0010 /* captured on a device without a link header */
#define PB_F_VLAN        0x0020 /* the frame carried at least one 802.1Q tag */
#define PB_F_TUNNEL      0x0040 /* decapsulated: the addresses and ports are the inner packet's,
                                   the tunnel_* and outer_* fields say what carried it */

/* Encapsulations the program looks inside (at most PB_MAX_ENCAP of them nested,
 * PPPoE included).  pb_record.tunnel_kinds holds one per 4 bits, the outermost
 * in the lowest; agent/capture/tunnel.py names them. */
#define PB_MAX_ENCAP 3
#define PB_TUN_GRE      1       /* GRE (RFC 2784/2890): IPv4, IPv6 or Ethernet (0x6558, NVGRE) inside */
#define PB_TUN_ERSPAN1  2       /* GRE 0x88BE without sequence number: Ethernet right after GRE */
#define PB_TUN_ERSPAN2  3       /* GRE 0x88BE with sequence number: 8-byte ERSPAN II header, Ethernet */
#define PB_TUN_ERSPAN3  4       /* GRE 0x22EB: 12-byte ERSPAN III header (+8 with the O bit), Ethernet */
#define PB_TUN_VXLAN    5       /* UDP to a VXLAN port: 8-byte header with the I flag, Ethernet */
#define PB_TUN_GENEVE   6       /* UDP to a GENEVE port: 8 bytes + options, Ethernet or IP */
#define PB_TUN_IPIP     7       /* IPv4 in IPv4/IPv6 (IP protocol 4) */
#define PB_TUN_IP6      8       /* IPv6 in IPv4/IPv6 (IP protocol 41: 6in4/SIT, ip6tnl) */
#define PB_TUN_PPPOE    9       /* PPPoE session stage (ethertype 0x8864), PPP IPv4/IPv6 */
/* UDP destination ports per tunnel kind the settings can hold. */
#define PB_MAX_TUNNEL_PORTS 8

/* pb_record.direction */
#define PB_DIR_INGRESS 0
#define PB_DIR_EGRESS  1

struct pb_record {
    __u64 ts_ns;          /* bpf_ktime_get_boot_ns() when the packet was seen */
    __u32 ifindex;
    __u32 wire_len;       /* skb->len, link header included */
    __u32 seq;            /* TCP: sequence number of the first payload byte of THIS record */
    __u32 ack;
    __u32 frag_id;        /* IPv4 identification or IPv6 fragment id (fragments only) */
    __u32 missing;        /* payload bytes of the packet that no record carries (truncation) */
    __u32 flow_hash;      /* symmetric hash used to pick the worker ring */
    __u16 sport;          /* ICMP: 0 */
    __u16 dport;
    __u16 window;
    __u16 payload_len;    /* payload bytes that follow this header */
    __u16 payload_off;    /* offset of this chunk in the packet's L4 payload */
    __u16 frag_off;       /* fragment offset in bytes (fragments only) */
    __u16 flags;          /* PB_F_* */
    __u16 vlan;           /* outer VLAN id, 0 when untagged */
    __u8  direction;      /* PB_DIR_* */
    __u8  family;         /* 4 or 6 */
    __u8  l4proto;        /* IPPROTO_TCP, _UDP, _ICMP, _ICMPV6 */
    __u8  tcp_flags;      /* FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE 0x40 CWR 0x80 */
    __u8  saddr[16];      /* IPv4 in the first 4 bytes */
    __u8  daddr[16];
    __u32 tunnel_id;      /* of the innermost encapsulation that has one: VXLAN/GENEVE VNI, GRE key,
                             ERSPAN session, PPPoE session; 0 when none does */
    __u16 tunnel_kinds;   /* PB_TUN_* per 4 bits, outermost first (lowest bits); 0: not decapsulated */
    __u8  tunnel_depth;   /* encapsulations decapsulated, 0..PB_MAX_ENCAP */
    __u8  outer_family;   /* 4 or 6: the outermost IP header that carried a tunnel; 0 when none (PPPoE) */
    __u8  outer_saddr[16];
    __u8  outer_daddr[16];
};                        /* 128 bytes, no padding: checked by the layout test */

/* Per-CPU counters, one block per attached interface (`counters` array map,
 * indexed by the interface's slot; slot 0 collects unregistered interfaces).
 *
 * Every run of the program (SKBS) ends in exactly one of the outcomes marked
 * [outcome], so SKBS == the sum of the outcomes: a loss that is not counted is
 * a bug.  SEEN and BYTES count the wire: a GSO/GRO super-packet counts as the
 * segments it stands for (gso_segs), each with its own headers.  The others
 * are details. */
enum pb_counter {
    PB_C_SEEN = 0,        /* wire packets: one per segment of a GSO/GRO super-packet */
    PB_C_NOT_IP,          /* [outcome] not IPv4/IPv6 (ARP, LLDP, > 2 VLAN tags, ...) */
    PB_C_MALFORMED,       /* [outcome] IP/L4 header shorter than it claims, or unreadable */
    PB_C_OTHER_L4,        /* [outcome] IP, but not TCP/UDP/ICMP (GRE, ESP, ...): flows only */
    PB_C_UNMATCHED,       /* [outcome] no configured port (or ICMP off): flows only */
    PB_C_NO_PAYLOAD,      /* [outcome] matched TCP without payload and without FIN/SYN/RST */
    PB_C_SENT,            /* [outcome] every record of the packet was written to a ring */
    PB_C_RING_FULL,       /* [outcome] lost (from the first chunk that did not fit) */
    PB_C_LOAD_FAILED,     /* [outcome] bpf_skb_load_bytes failed on the payload */
    PB_C_EMIT_FAILED,     /* [outcome] no scratch buffer or emitter program (cannot happen) */
    PB_C_MATCHED,         /* packets whose port (or ICMP, or fragment) is passed on */
    PB_C_EMITTED,         /* records written to a ring buffer */
    PB_C_TRUNCATED,       /* packets whose payload was cut at snaplen */
    PB_C_FRAGMENT,        /* IP fragments passed to user space for reassembly */
    PB_C_WAKEUPS,         /* forced ring-buffer wake-ups */
    PB_C_FLOW_NEW,        /* flow table entries created */
    PB_C_FLOW_FAILED,     /* flow table update failed */
    PB_C_BYTES,           /* wire bytes: skb->len plus the headers of every further segment */
    PB_C_FRAG_NO_PORTS,   /* later fragments whose first one was not seen (or forgotten): flow without ports */
    PB_C_SKBS,            /* runs of the program (a super-packet counts once): the outcomes add up to this */
    PB_C_GSO,             /* runs on a super-packet standing for more than one segment */
    PB_C_DECAPSULATED,    /* packets whose inner packet was parsed (one per packet, whatever the depth) */
    PB_C_TUNNEL_TOO_DEEP, /* a further encapsulation past PB_MAX_ENCAP: handled at the depth reached */
    PB_C_TUNNEL_NOT_FOLLOWED, /* a tunnel header pktbeat does not follow (GRE version 1 or routing, unknown
                                 GRE/GENEVE protocol, VXLAN without the I flag): handled as the outer packet */
    PB_C_MAX
};

struct pb_counters {
    __u64 c[PB_C_MAX];
};

/* Per interface, filled by user space when it attaches (`ifaces` hash map). */
struct pb_iface {
    __u32 slot;           /* index into `counters` */
    __u16 link_len;       /* bytes of link header: 14 Ethernet/loopback, 0 tun/wireguard/ppp */
    __u16 flags;          /* reserved, 0 */
};

/* Settings user space may change while running (`settings` array, one entry). */
struct pb_settings {
    __u32 snaplen;        /* payload bytes copied per packet, at most PB_MAX_SNAPLEN */
    __u32 wake_every;     /* force a reader wake-up every N records per CPU (0: every record) */
    __u8  icmp;           /* pass ICMP/ICMPv6 to user space */
    __u8  flows;          /* maintain the flow table */
    __u8  decap;          /* look inside tunnels */
    __u8  pad[5];
    __u16 vxlan_ports[PB_MAX_TUNNEL_PORTS];  /* UDP destination ports carrying VXLAN; 0 ends the list */
    __u16 geneve_ports[PB_MAX_TUNNEL_PORTS]; /* ... and GENEVE */
};

/* `ports` hash map key: (IP protocol, port) -> protocol index (value __u32). */
struct pb_port_key {
    __u8  l4proto;
    __u8  pad;
    __u16 port;           /* host byte order */
};

/* `flows` LRU hash map: the direction-independent key of
 * agent/flows/types.py FlowKey.  The "lo" endpoint is the lower
 * (address bytes, port) pair. */
struct pb_flow_key {
    __u8  family;
    __u8  l4proto;
    __u16 port_lo;
    __u16 port_hi;
    __u16 icmp_id;        /* 0: ICMP between two hosts is one flow, as in Packetbeat */
    __u16 vlan_outer;
    __u16 vlan_inner;
    __u32 zone;           /* the tunnel the packets travel in (a hash of its kinds, id and outer
                             addresses, the same both ways), 0 outside tunnels: the same inner
                             addresses in two VXLAN segments are two flows */
    __u8  addr_lo[16];
    __u8  addr_hi[16];
};                        /* 48 bytes */

/* Side index into pb_flow arrays: 0 = sent by the "lo" endpoint. */
struct pb_flow {
    __u64 first_ns;       /* boot-time ns */
    __u64 last_ns;
    __u64 packets[2];     /* wire packets: the segments of a GSO/GRO super-packet */
    __u64 bytes[2];       /* wire bytes, link header included (each segment's headers counted) */
    __u32 tcp_flags;      /* OR of every TCP flag seen */
    __u8  first_side;     /* the side that sent the first packet */
    __u8  has_mac;        /* 1 when captured with an Ethernet header */
    __u8  icmp_type;      /* of the latest ICMP message the first side sent */
    __u8  icmp_code;
    __u8  mac[2][6];      /* source MAC of each side (Ethernet devices) */
    __u32 tunnel_id;      /* as in pb_record, from the packet that created the entry */
    __u16 tunnel_kinds;
    __u8  tunnel_depth;
    __u8  outer_family;
    __u8  outer[2][16];   /* outermost tunnel address of each side */
    __u8  pad[4];
};                        /* 112 bytes */

#endif /* PKTBEAT_RECORD_H */
