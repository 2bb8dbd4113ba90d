/* What bpf/tls.bpf.c (TLS plaintext from OpenSSL uprobes) shares with user space.
 *
 * agent/capture/tlsrecord.py decodes these structs with struct formats that
 * tests/capture/test_tls_layout.py checks against this file by compiling it:
 * change both together and bump PB_TLS_VERSION.
 *
 * Plaintext records travel in the per-worker rings with packet and socket
 * records.  Like a socket record (sockets.h), a plaintext record starts with
 * a marker that has bit 63 set; its low 32 bits ("TLSP") tell it from a
 * socket record ("SOCK").
 */
#ifndef PKTBEAT_TLS_H
#define PKTBEAT_TLS_H

#define PB_TLS_VERSION 1
#define PB_TLS_MAGIC 0x544c5350U /* "TLSP" */
#define PB_TLS_MARKER (0x8000000000000000ULL | ((__u64)PB_TLS_VERSION << 32) | PB_TLS_MAGIC)

/* Plaintext bytes one record carries: a TLS record's largest plaintext.  A
 * larger SSL_read/SSL_write result is split over several records. */
#ifndef PB_TLS_CHUNK
#define PB_TLS_CHUNK 16384
#endif
/* Records one call may produce; what is beyond (PB_TLS_CHUNK * PB_TLS_MAX_CHUNKS
 * bytes) is counted as missing in the last record. */
#ifndef PB_TLS_MAX_CHUNKS
#define PB_TLS_MAX_CHUNKS 16
#endif

/* pb_tls_record.direction, from the local socket's point of view. */
#define PB_TLS_SENT     0 /* SSL_write: local -> remote */
#define PB_TLS_RECEIVED 1 /* SSL_read: remote -> local */

/* pb_tls_record.role: which end of the connection the local process is. */
#define PB_TLS_ROLE_UNKNOWN 0
#define PB_TLS_ROLE_CLIENT  1 /* the remote port is a plaintext port (tls_ports) */
#define PB_TLS_ROLE_SERVER  2 /* the local port is */

/* pb_tls_record.flags */
#define PB_TLS_F_LAST_CHUNK 0x01 /* the last record of one SSL call */
#define PB_TLS_F_CLOSE      0x02 /* SSL_free: the connection's plaintext ends (no payload) */

struct pb_tls_record {
    __u64 marker;         /* PB_TLS_MARKER */
    __u64 ts_ns;          /* bpf_ktime_get_boot_ns() when the call returned */
    __u64 ssl;            /* the SSL object's address in its process: with tgid, the stream's identity */
    __u64 offset;         /* position of this chunk's first byte in the direction's plaintext */
    __u32 tgid;
    __u32 netns;          /* inode of the socket's network namespace */
    __u32 len;            /* payload bytes that follow this header */
    __u32 missing;        /* bytes of the call after this record that no record carries (last chunk only) */
    __u16 lport;          /* local port, host byte order */
    __u16 rport;
    __u8  family;         /* 4 or 6 */
    __u8  direction;      /* PB_TLS_SENT / PB_TLS_RECEIVED */
    __u8  role;           /* PB_TLS_ROLE_* */
    __u8  flags;          /* PB_TLS_F_* */
    __u8  laddr[16];      /* IPv4 in the first 4 bytes */
    __u8  raddr[16];
};                        /* 88 bytes, no padding: checked by the layout test */

/* Per-CPU counters of the TLS programs (`tls_counters`, one entry). */
enum pb_tls_counter {
    PB_T_CALLS = 0,       /* SSL_read/SSL_write(_ex) calls that returned */
    PB_T_FAILED,          /* ... with nothing read or written (<= 0, WANT_READ, errors) */
    PB_T_NO_SOCKET,       /* calls with data whose SSL object never met a socket (memory BIO): dropped */
    PB_T_OTHER_PORT,      /* calls on a connection whose ports are no plaintext port: not sent */
    PB_T_OTHER_SIDE,      /* calls of a connection's server side whose client is traced too: not sent */
    PB_T_RECORDS,         /* records written to a ring */
    PB_T_BYTES,           /* plaintext bytes in them */
    PB_T_RING_FULL,       /* records lost: the ring was full (the rest of the call is lost too) */
    PB_T_READ_FAILED,     /* bpf_probe_read_user of the buffer failed: the call's bytes are lost */
    PB_T_TRUNCATED,       /* calls longer than PB_TLS_CHUNK * PB_TLS_MAX_CHUNKS: the rest is missing */
    PB_T_CALLS_LOST,      /* calls whose entry was not remembered (`tls_calls` full) */
    PB_T_CONNS_FAILED,    /* `tls_conns` updates that failed */
    PB_T_CLOSED,          /* SSL_free of a connection that had sent plaintext */
    PB_T_EXECS,           /* exec notifications sent to the parent */
    PB_T_EXECS_LOST,      /* ... lost: the notification ring was full */
    PB_T_MAX
};

struct pb_tls_counters {
    __u64 c[PB_T_MAX];
};

/* An exec the parent may want to look at (new libraries in a new mount namespace). */
struct pb_tls_exec {
    __u32 tgid;
    __u32 pad;
};

#endif /* PKTBEAT_TLS_H */
