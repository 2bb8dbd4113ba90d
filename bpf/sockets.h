/* What bpf/sockets.bpf.c (process attribution) shares with user space.
 *
 * agent/capture/sockrecord.py decodes these structs with struct formats that
 * tests/capture/test_record_layout.py checks against this file by compiling
 * it: change both together and bump PB_SOCK_VERSION.
 *
 * Socket records travel in the per-worker rings with the packet records.  A
 * packet record (struct pb_record, record.h) starts with its boot-time
 * timestamp, which never reaches bit 63; a socket record starts with
 * PB_SOCK_MARKER, which has it.  That one bit tells the two apart.
 */
#ifndef PKTBEAT_SOCKETS_H
#define PKTBEAT_SOCKETS_H

#define PB_SOCK_VERSION 1
#define PB_SOCK_MARKER (0x8000000000000000ULL | ((__u64)PB_SOCK_VERSION << 32) | 0x534f434bULL)

#define PB_COMM_LEN 16   /* TASK_COMM_LEN */
#define PB_EXE_LEN 256   /* executable path, NUL included */
#define PB_ARGS_LEN 512  /* argv as the process's memory holds it: NUL-separated */

/* pb_sock_record.how: the moment the kernel learnt the socket's process. */
#define PB_HOW_CONNECT 1 /* connect(): remembered then, sent once established (the port is known) */
#define PB_HOW_IO      2 /* the first send/recv: accepted sockets, UDP, sockets older than the agent */
#define PB_HOW_REFRESH 3 /* the same again after PB_REFRESH_NS, so a reader that lost it learns it again */
#define PB_HOW_CLOSE   4 /* close() of a socket that never did any I/O */

/* pb_sock_record.exec_flags: where exe and args (after the record) come from. */
#define PB_EXEC_OWN            0x01 /* this process's execve, seen by the agent */
#define PB_EXEC_INHERITED      0x02 /* its parent's execve: it was forked after that and has not exec'd since */
#define PB_EXEC_ARGS_TRUNCATED 0x04 /* argv was longer than PB_ARGS_LEN */

/* What the kernel knows about a task at the moment it uses a socket. */
struct pb_task {
    __u64 start_ns;          /* the process's start (its leader's start_boottime), boot-time ns */
    __u64 parent_start_ns;   /* the parent's, likewise (tells a reused ppid apart) */
    __u32 tgid;              /* process id, in the host's pid namespace */
    __u32 tid;               /* thread id */
    __u32 ppid;              /* the parent's process id */
    __u32 uid;               /* real uid, in the host's user namespace */
    __u32 gid;
    __u32 netns;             /* inode of the socket's network namespace */
    char  comm[PB_COMM_LEN]; /* the process's name (its leader's comm) */
};                           /* 56 bytes */

/* A socket and its process.  Addresses are the socket's own view: local
 * first; IPv4 (and IPv4-mapped IPv6) in the first 4 bytes with family 4;
 * an unconnected UDP socket has a zero remote address and port, and a
 * wildcard-bound one a zero local address. */
struct pb_sock_record {
    __u64 marker;            /* PB_SOCK_MARKER */
    __u64 ts_ns;             /* bpf_ktime_get_boot_ns() */
    struct pb_task task;
    __u16 lport;             /* host byte order */
    __u16 rport;
    __u8  family;            /* 4 or 6 */
    __u8  l4proto;           /* 6 TCP, 17 UDP */
    __u8  how;               /* PB_HOW_* */
    __u8  exec_flags;        /* PB_EXEC_*: when OWN or INHERITED, a struct pb_exec_text follows */
    __u8  laddr[16];
    __u8  raddr[16];
};                           /* 112 bytes */

struct pb_exec_text {
    char exe[PB_EXE_LEN];    /* NUL-terminated */
    char args[PB_ARGS_LEN];  /* args_len bytes of NUL-separated argv */
    __u32 args_len;
    __u32 truncated;         /* 1: argv was longer than PB_ARGS_LEN */
};

/* `owners` LRU hash map, read by the parent for flows: a local endpoint and
 * its peer (as in pb_sock_record) -> the task. */
struct pb_owner_key {
    __u8  family;
    __u8  l4proto;
    __u16 lport;
    __u16 rport;
    __u16 pad;
    __u8  laddr[16];
    __u8  raddr[16];
};                           /* 40 bytes */

/* Per-CPU counters of the socket programs (`sock_counters`, one entry). */
enum pb_sock_counter {
    PB_S_CONNECTS = 0,       /* connect() calls seen (CLOSE -> SYN_SENT) */
    PB_S_CONNECTED,          /* of which established and sent */
    PB_S_CONNECT_UNKNOWN,    /* established without a remembered connect (table full, or older than the agent) */
    PB_S_FIRST_IO,           /* sockets attributed at their first send/recv */
    PB_S_CLOSED_IDLE,        /* sockets attributed when closed without I/O */
    PB_S_REFRESHED,          /* attributions sent again after PB_REFRESH_NS */
    PB_S_OWNER_CHANGED,      /* sockets used by another process than the one they were attributed to */
    PB_S_THROTTLED,          /* owner changes not sent (a socket shared by processes, within PB_RECHECK_NS) */
    PB_S_FLOWS_ONLY,         /* sockets on no configured port: in `owners` for flows, no record sent */
    PB_S_SENT,               /* socket records written to a ring */
    PB_S_RING_FULL,          /* socket records lost: the ring was full */
    PB_S_EXECS,              /* execve calls recorded */
    PB_S_EXEC_TRUNCATED,     /* of which argv was cut at PB_ARGS_LEN */
    PB_S_EXEC_KNOWN,         /* socket records carrying exe and args */
    PB_S_OWNERS_FAILED,      /* `owners` updates that failed */
    PB_S_MAX
};

struct pb_sock_counters {
    __u64 c[PB_S_MAX];
};

#endif /* PKTBEAT_SOCKETS_H */
