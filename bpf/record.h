/* The one definition of what the kernel program hands to user space.
 *
 * Every record in a ring buffer is a `struct pb_record` followed by
 * `payload_len` payload bytes.  agent/capture/record.py decodes it with a
 * struct format that tests/capture/test_record_layout.py checks against this
 * file, so change both together and bump PB_RECORD_VERSION.
 */
#ifndef PKTBEAT_RECORD_H
#define PKTBEAT_RECORD_H

#define PB_RECORD_VERSION 1

/* Bytes of payload one record can carry.  A GRO/GSO super-packet larger than
 * this is split over several records with increasing `payload_off`. */
#define PB_CHUNK 16384
/* The kernel never copies more than this much payload from one packet. */
#define PB_MAX_SNAPLEN 65535

/* pb_record.flags */
#define PB_F_TRUNCATED   0x0001 /* payload beyond snaplen was not copied: the last
                                   record of the packet says how many bytes in `missing` */
#define PB_F_FRAGMENT    0x0002 /* an IP fragment: payload is the raw IP payload,
                                   ports are zero unless this is the first fragment */
#define PB_F_MORE_FRAGS  0x0004 /* IPv4 MF bit / IPv6 M bit */
#define PB_F_LAST_CHUNK  0x0008 /* the last record of this packet */
#define PB_F_L3_DEVICE   0x0010 /* captured on a device without a link header */
#define PB_F_VLAN        0x0020 /* the frame carried at least one 802.1Q tag */

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
};                        /* 88 bytes, no padding: checked by the layout test */

/* Per-CPU counters, index into the `counters` array map. */
enum pb_counter {
    PB_C_SEEN = 0,        /* packets the program ran on */
    PB_C_NOT_IP,          /* not IPv4/IPv6 (ARP, LLDP, ...) */
    PB_C_MALFORMED,       /* IP/L4 header shorter than it claims, or unreadable */
    PB_C_OTHER_L4,        /* IP, but not TCP/UDP/ICMP (GRE, ESP, ...) */
    PB_C_FLOW_UPDATED,    /* flow table entries updated */
    PB_C_FLOW_FULL,       /* flow update failed (map full/error) */
    PB_C_MATCHED,         /* packets whose port (or ICMP) matched a protocol */
    PB_C_NO_PAYLOAD,      /* matched TCP without payload and without FIN/SYN/RST: not sent */
    PB_C_EMITTED,         /* records written to a ring buffer */
    PB_C_RING_FULL,       /* records lost because the ring buffer was full */
    PB_C_TRUNCATED,       /* packets whose payload was cut at snaplen */
    PB_C_FRAGMENT,        /* IP fragments passed to user space for reassembly */
    PB_C_SKIPPED_DIR,     /* packets skipped by direction (egress on loopback) */
    PB_C_LOAD_FAILED,     /* bpf_skb_load_bytes failed on a payload chunk */
    PB_C_WAKEUPS,         /* forced ring-buffer wake-ups */
    PB_C_MAX
};

#endif /* PKTBEAT_RECORD_H */
