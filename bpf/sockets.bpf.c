/* Process attribution: which process owns each TCP and UDP socket.
 *
 * Included at the end of bpf/pktbeat.bpf.c when PB_PROCS is defined, so it
 * shares that module's rings and its flow hash.  Only raw tracepoints are
 * used (no kprobes, no fentry: neither is available everywhere):
 *
 *   inet_sock_set_state  CLOSE -> SYN_SENT runs in connect(), in the
 *                        connecting task: its facts are remembered by sk
 *                        (`connecting`).  SYN_SENT -> ESTABLISHED (the local
 *                        port is known by then) sends them.  Other moves
 *                        run in softirq, where the current task is nobody
 *                        in particular, except the owner's own close().
 *   sock_send_length,    run in the thread doing the I/O: the first one on a
 *   sock_recv_length     socket attributes it (accepted sockets, whose
 *                        SYN_RECV -> ESTABLISHED runs in softirq; UDP;
 *                        sockets older than the agent).
 *   sched_process_exec   the executable and argv of every new program, kept
 *                        by tgid (`execs`), so a process that is gone by the
 *                        time user space looks is still described.
 *
 * An attribution goes into `owners`, where the parent looks flows up, and,
 * when the socket is on a configured protocol port (it may make
 * transactions), into a record in the ring of the worker that decodes its
 * packets (TCP: the same symmetric 5-tuple hash as the TC program; UDP is
 * keyed by address pair there, unknown for an unconnected socket, so UDP
 * records go to every ring).  `attributed` remembers what was sent per socket;
 * a record is sent again when another process uses the socket (after
 * PB_RECHECK_NS) or PB_REFRESH_NS later, so a reader that lost one (ring
 * full, table eviction) learns it again.
 *
 * Struct offsets of the running kernel come from BTF as -DPB_OFF_* (see
 * agent/capture/btf.py): the headers BCC compiles against may be another
 * kernel's.  Reads go through bpf_probe_read_kernel at those offsets.
 *
 * Compile-time parameters: PB_MAX_SOCKETS (connecting, attributed, owners),
 * PB_MAX_EXECS, PB_REFRESH_NS, PB_RECHECK_NS.
 */
#include "sockets.h"

#ifndef PB_OFF_TASK_TGID
#error "process attribution needs the kernel's struct offsets (-DPB_OFF_*), read from BTF"
#endif
#ifndef PB_MAX_SOCKETS
#define PB_MAX_SOCKETS 65536
#endif
#ifndef PB_MAX_EXECS
#define PB_MAX_EXECS 4096
#endif
#ifndef PB_REFRESH_NS
#define PB_REFRESH_NS 60000000000ULL
#endif
#ifndef PB_RECHECK_NS
#define PB_RECHECK_NS 100000000ULL
#endif

#define PB_AF_INET 2
#define PB_AF_INET6 10
#define PB_TCP_ESTABLISHED 1
#define PB_TCP_SYN_SENT 2
#define PB_TCP_FIN_WAIT1 4
#define PB_TCP_CLOSE 7
#define PB_TCP_CLOSE_WAIT 8
#define PB_TCP_LAST_ACK 9

/* Scratch slots, one per program: a program interrupted by softirq on the
 * same CPU may be followed by another of them, never by itself. */
#define PB_SLOT_STATE 0
#define PB_SLOT_SEND 1
#define PB_SLOT_RECV 2
#define PB_SLOT_EXEC 3

struct pb_exec {
    __u64 start_ns;          /* of the process that exec'd */
    __u64 exec_ns;           /* when */
    struct pb_exec_text text;
};

struct pb_sock_full {
    struct pb_sock_record rec; /* must be followed directly by text: both go to the ring as one */
    struct pb_exec_text text;
};

/* What was sent for a socket: who and when. */
struct pb_sent {
    __u64 at_ns;
    __u64 sig;               /* tgid << 32 | lport << 16 | rport */
};

BPF_TABLE("lru_hash", u64, struct pb_task, connecting, PB_MAX_SOCKETS);
BPF_TABLE("lru_hash", u64, struct pb_sent, attributed, PB_MAX_SOCKETS);
BPF_TABLE("lru_hash", struct pb_owner_key, struct pb_task, owners, PB_MAX_SOCKETS);
BPF_TABLE("lru_hash", u32, struct pb_exec, execs, PB_MAX_EXECS);
BPF_PERCPU_ARRAY(sock_counters, struct pb_sock_counters, 1);
BPF_PERCPU_ARRAY(sock_scratch, struct pb_sock_full, 3);
BPF_PERCPU_ARRAY(exec_scratch, struct pb_exec, 1);

static __always_inline void sock_count(u32 which)
{
    u32 zero = 0;
    struct pb_sock_counters *c = sock_counters.lookup(&zero);
    if (c && which < PB_S_MAX)
        c->c[which]++;
}

static __always_inline u64 rd64(const void *base, u32 off)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline u32 rd32(const void *base, u32 off)
{
    u32 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline u16 rd16(const void *base, u32 off)
{
    u16 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline void *rdptr(const void *base, u32 off)
{
    return (void *)rd64(base, off);
}

/* ---- the socket's identity ------------------------------------------------------ */

/* A socket's family, protocol, addresses and ports as its owner sees them
 * (local first).  Reusable by any program holding a struct sock pointer
 * (TLS uprobes find theirs through sock_send_length in the same thread). */
struct pb_sock_tuple {
    u8 laddr[16];
    u8 raddr[16];
    u16 lport;
    u16 rport;
    u8 family;
    u8 l4proto;
    u16 pad;
    u32 netns;
};

static __always_inline int v4_mapped(const u8 *a)
{
    return *(const u32 *)a == 0 && *(const u32 *)(a + 4) == 0 && *(const u32 *)(a + 8) == 0xffff0000;
}

static __always_inline int unspecified(const u8 *a)
{
    return (*(const u32 *)a | *(const u32 *)(a + 4) | *(const u32 *)(a + 8) | *(const u32 *)(a + 12)) == 0;
}

/* 0 when sk is a TCP or UDP socket of IPv4/IPv6 (and *t is filled), -1 otherwise. */
static __always_inline int pb_sock_tuple_of(const void *sk, struct pb_sock_tuple *t)
{
    u16 family = rd16(sk, PB_OFF_SKC_FAMILY);
    if (family != PB_AF_INET && family != PB_AF_INET6)
        return -1;
    u16 proto = rd16(sk, PB_OFF_SK_PROTOCOL);
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
        return -1;
    __builtin_memset(t, 0, sizeof(*t));
    t->l4proto = proto;
    t->lport = rd16(sk, PB_OFF_SKC_NUM);
    t->rport = __builtin_bswap16(rd16(sk, PB_OFF_SKC_DPORT));
    if (family == PB_AF_INET) {
        t->family = 4;
        bpf_probe_read_kernel(t->laddr, 4, (const char *)sk + PB_OFF_SKC_RCV_SADDR);
        bpf_probe_read_kernel(t->raddr, 4, (const char *)sk + PB_OFF_SKC_DADDR);
    } else {
        t->family = 6;
        bpf_probe_read_kernel(t->laddr, 16, (const char *)sk + PB_OFF_SKC_V6_RCV_SADDR);
        bpf_probe_read_kernel(t->raddr, 16, (const char *)sk + PB_OFF_SKC_V6_DADDR);
        /* A dual-stack socket talking IPv4: the wire (and the packets' flow hash) has IPv4. */
        int lmap = v4_mapped(t->laddr), rmap = v4_mapped(t->raddr);
        if ((lmap || unspecified(t->laddr)) && (rmap || unspecified(t->raddr)) && (lmap || rmap)) {
            t->family = 4;
            __builtin_memcpy(t->laddr, t->laddr + 12, 4);
            __builtin_memset(t->laddr + 4, 0, 12);
            __builtin_memcpy(t->raddr, t->raddr + 12, 4);
            __builtin_memset(t->raddr + 4, 0, 12);
        }
    }
    void *net = rdptr(sk, PB_OFF_SKC_NET);
    t->netns = net ? rd32(net, PB_OFF_NET_INUM) : 0;
    return 0;
}

/* ---- the task ---------------------------------------------------------------------- */

static __always_inline void current_task_facts(struct pb_task *t)
{
    void *task = (void *)bpf_get_current_task();
    u64 id = bpf_get_current_pid_tgid();
    u64 ids = bpf_get_current_uid_gid();
    t->tgid = id >> 32;
    t->tid = (u32)id;
    t->uid = (u32)ids;
    t->gid = ids >> 32;
    void *leader = rdptr(task, PB_OFF_TASK_GROUP_LEADER);
    if (!leader)
        leader = task;
    t->start_ns = rd64(leader, PB_OFF_TASK_START_BOOTTIME);
    bpf_probe_read_kernel(t->comm, sizeof(t->comm), (const char *)leader + PB_OFF_TASK_COMM);
    void *parent = rdptr(task, PB_OFF_TASK_REAL_PARENT);
    if (parent) {
        t->ppid = rd32(parent, PB_OFF_TASK_TGID);
        void *parent_leader = rdptr(parent, PB_OFF_TASK_GROUP_LEADER);
        t->parent_start_ns = rd64(parent_leader ? parent_leader : parent, PB_OFF_TASK_START_BOOTTIME);
    }
}

/* The execve that describes the task: its own, or its parent's if it was
 * forked after that one and never exec'd since the agent started. */
static __always_inline struct pb_exec *exec_of(struct pb_task *t, u8 *flags)
{
    u32 tgid = t->tgid;
    struct pb_exec *e = execs.lookup(&tgid);
    if (e && e->start_ns == t->start_ns) {
        *flags = PB_EXEC_OWN;
        return e;
    }
    u32 ppid = t->ppid;
    e = execs.lookup(&ppid);
    if (e && e->start_ns == t->parent_start_ns && t->start_ns >= e->exec_ns) {
        *flags = PB_EXEC_INHERITED;
        return e;
    }
    return NULL;
}

/* ---- sending ----------------------------------------------------------------------- */

/* Only a socket on a configured protocol port can make transactions; the others are for flows only.
 * An unconnected UDP socket may talk to any port: it always counts. */
static __always_inline int decoded_port(struct pb_sock_tuple *tu)
{
    if (tu->rport == 0)
        return 1;
    struct pb_port_key k = {.l4proto = tu->l4proto, .pad = 0, .port = tu->lport};
    if (ports.lookup(&k))
        return 1;
    k.port = tu->rport;
    return ports.lookup(&k) != NULL;
}

static __always_inline void attribute(struct pb_sock_tuple *tu, struct pb_task *task, u8 how, u32 slot)
{
    task->netns = tu->netns;
    struct pb_owner_key ok;
    __builtin_memset(&ok, 0, sizeof(ok));
    ok.family = tu->family;
    ok.l4proto = tu->l4proto;
    ok.lport = tu->lport;
    ok.rport = tu->rport;
    __builtin_memcpy(ok.laddr, tu->laddr, 16);
    __builtin_memcpy(ok.raddr, tu->raddr, 16);
    if (owners.update(&ok, task) != 0)
        sock_count(PB_S_OWNERS_FAILED);
    if (!decoded_port(tu)) {
        sock_count(PB_S_FLOWS_ONLY);
        return;
    }

    struct pb_sock_full *s = sock_scratch.lookup(&slot);
    if (!s)
        return;
    struct pb_sock_record *r = &s->rec;
    r->marker = PB_SOCK_MARKER;
    r->ts_ns = bpf_ktime_get_boot_ns();
    __builtin_memcpy(&r->task, task, sizeof(*task));
    r->lport = tu->lport;
    r->rport = tu->rport;
    r->family = tu->family;
    r->l4proto = tu->l4proto;
    r->how = how;
    __builtin_memcpy(r->laddr, tu->laddr, 16);
    __builtin_memcpy(r->raddr, tu->raddr, 16);
    u8 flags = 0;
    struct pb_exec *e = exec_of(&r->task, &flags);
    u64 size = sizeof(struct pb_sock_record);
    if (e) {
        bpf_probe_read_kernel(&s->text, sizeof(s->text), &e->text);
        if (s->text.truncated)
            flags |= PB_EXEC_ARGS_TRUNCATED;
        size = sizeof(struct pb_sock_full);
        sock_count(PB_S_EXEC_KNOWN);
    }
    r->exec_flags = flags;

    if (tu->l4proto == IPPROTO_TCP) {
        u32 ring = pb_tuple_hash(tu->laddr, tu->raddr, tu->lport, tu->rport, 1) % PB_WORKERS;
        if (ring_output(ring, r, size, BPF_RB_NO_WAKEUP) < 0 && ring_output(ring, r, size, BPF_RB_NO_WAKEUP) < 0)
            sock_count(PB_S_RING_FULL);
        else
            sock_count(PB_S_SENT);
        return;
    }
#pragma unroll
    for (u32 ring = 0; ring < PB_WORKERS; ring++) {
        if (ring_output(ring, r, size, BPF_RB_NO_WAKEUP) < 0 && ring_output(ring, r, size, BPF_RB_NO_WAKEUP) < 0)
            sock_count(PB_S_RING_FULL);
        else
            sock_count(PB_S_SENT);
    }
}

static __always_inline u64 signature(u32 tgid, struct pb_sock_tuple *tu)
{
    return ((u64)tgid << 32) | ((u32)tu->lport << 16) | tu->rport;
}

static __always_inline void remember(u64 key, u64 sig, u64 now)
{
    struct pb_sent sent = {.at_ns = now, .sig = sig};
    attributed.update(&key, &sent);
}

/* A send or receive in the socket owner's thread. */
static __always_inline int on_io(void *sk, u32 slot)
{
    if (!sk)
        return 0;
    u16 family = rd16(sk, PB_OFF_SKC_FAMILY);
    if (family != PB_AF_INET && family != PB_AF_INET6)
        return 0;
    u64 key = (u64)sk;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u16 lport = rd16(sk, PB_OFF_SKC_NUM);
    if (lport == 0)
        return 0; /* not bound yet: nothing to match packets with */
    u16 rport = __builtin_bswap16(rd16(sk, PB_OFF_SKC_DPORT));
    u64 sig = ((u64)tgid << 32) | ((u32)lport << 16) | rport;
    u64 now = bpf_ktime_get_boot_ns();
    u8 how = PB_HOW_IO;
    struct pb_sent *sent = attributed.lookup(&key);
    if (sent) {
        u64 age = now - sent->at_ns;
        if (sent->sig == sig) {
            if (age < PB_REFRESH_NS)
                return 0;
            how = PB_HOW_REFRESH;
        } else if ((u32)sent->sig == (u32)sig) {
            /* Same ports, another process: shared (a fork's inherited fd) or passed on.
             * Told at most every PB_RECHECK_NS, or two processes taking turns would flood. */
            if (age < PB_RECHECK_NS) {
                sock_count(PB_S_THROTTLED);
                return 0;
            }
            sock_count(PB_S_OWNER_CHANGED);
        }
        /* Other ports: a new socket at a recycled address, or a UDP socket that connected. */
    }
    struct pb_sock_tuple tu;
    if (pb_sock_tuple_of(sk, &tu) < 0)
        return 0;
    struct pb_task task;
    __builtin_memset(&task, 0, sizeof(task));
    current_task_facts(&task);
    remember(key, sig, now);
    sock_count(how == PB_HOW_REFRESH ? PB_S_REFRESHED : PB_S_FIRST_IO);
    attribute(&tu, &task, how, slot);
    return 0;
}

/* ---- entry points ------------------------------------------------------------------ */

/* inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate) */
int pb_sock_state(struct bpf_raw_tracepoint_args *ctx)
{
    void *sk = (void *)ctx->args[0];
    int old = (int)ctx->args[1];
    int new = (int)ctx->args[2];
    u64 key = (u64)sk;
    if (old == PB_TCP_CLOSE && new == PB_TCP_SYN_SENT) {
        struct pb_task task;
        __builtin_memset(&task, 0, sizeof(task));
        current_task_facts(&task);
        connecting.update(&key, &task);
        sock_count(PB_S_CONNECTS);
        return 0;
    }
    if (old == PB_TCP_SYN_SENT && new == PB_TCP_ESTABLISHED) {
        struct pb_task *task = connecting.lookup(&key);
        if (!task) {
            sock_count(PB_S_CONNECT_UNKNOWN); /* its first I/O will tell */
            return 0;
        }
        struct pb_sock_tuple tu;
        if (pb_sock_tuple_of(sk, &tu) == 0) {
            struct pb_task copy;
            __builtin_memcpy(&copy, task, sizeof(copy));
            remember(key, signature(copy.tgid, &tu), bpf_ktime_get_boot_ns());
            sock_count(PB_S_CONNECTED);
            attribute(&tu, &copy, PB_HOW_CONNECT, PB_SLOT_STATE);
        }
        connecting.delete(&key);
        return 0;
    }
    if ((old == PB_TCP_ESTABLISHED && new == PB_TCP_FIN_WAIT1) ||
        (old == PB_TCP_CLOSE_WAIT && new == PB_TCP_LAST_ACK)) {
        /* Only the owner's close() or shutdown() makes these moves, in its own thread. */
        if (!attributed.lookup(&key)) {
            struct pb_sock_tuple tu;
            if (pb_sock_tuple_of(sk, &tu) == 0) {
                struct pb_task task;
                __builtin_memset(&task, 0, sizeof(task));
                current_task_facts(&task);
                remember(key, signature(task.tgid, &tu), bpf_ktime_get_boot_ns());
                sock_count(PB_S_CLOSED_IDLE);
                attribute(&tu, &task, PB_HOW_CLOSE, PB_SLOT_STATE);
            }
        }
        return 0;
    }
    if (new == PB_TCP_CLOSE) {
        connecting.delete(&key);
        attributed.delete(&key);
    }
    return 0;
}

/* sock_send_length(struct sock *sk, int ret, int flags) */
int pb_sock_send(struct bpf_raw_tracepoint_args *ctx)
{
    return on_io((void *)ctx->args[0], PB_SLOT_SEND);
}

/* sock_recv_length(struct sock *sk, int ret, int flags) */
int pb_sock_recv(struct bpf_raw_tracepoint_args *ctx)
{
    return on_io((void *)ctx->args[0], PB_SLOT_RECV);
}

/* sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm) */
int pb_exec(struct bpf_raw_tracepoint_args *ctx)
{
    u32 zero = 0;
    struct pb_exec *e = exec_scratch.lookup(&zero);
    if (!e)
        return 0;
    void *task = (void *)bpf_get_current_task();
    void *bprm = (void *)ctx->args[2];
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    void *leader = rdptr(task, PB_OFF_TASK_GROUP_LEADER);
    e->start_ns = rd64(leader ? leader : task, PB_OFF_TASK_START_BOOTTIME);
    e->exec_ns = bpf_ktime_get_boot_ns();
    e->text.exe[0] = 0;
    /* interp: the program that runs (a script's interpreter), as /proc/PID/exe would say. */
    const char *interp = rdptr(bprm, PB_OFF_BPRM_INTERP);
    if (interp)
        bpf_probe_read_kernel_str(e->text.exe, sizeof(e->text.exe), interp);
    e->text.args_len = 0;
    e->text.truncated = 0;
    void *mm = rdptr(task, PB_OFF_TASK_MM);
    if (mm) {
        u64 start = rd64(mm, PB_OFF_MM_ARG_START);
        u64 end = rd64(mm, PB_OFF_MM_ARG_END);
        u64 len = end > start ? end - start : 0;
        u32 keep = len > PB_ARGS_LEN ? PB_ARGS_LEN : (u32)len;
        if (len > PB_ARGS_LEN) {
            e->text.truncated = 1;
            sock_count(PB_S_EXEC_TRUNCATED);
        }
        asm volatile("" : "+r"(keep));
        if (keep > 0 && keep <= PB_ARGS_LEN && bpf_probe_read_user(e->text.args, keep, (void *)start) == 0)
            e->text.args_len = keep;
    }
    execs.update(&tgid, e);
    sock_count(PB_S_EXECS);
    return 0;
}
