/* TLS plaintext: what applications hand to OpenSSL and get back from it.
 *
 * Appended to bpf/pktbeat.bpf.c and bpf/sockets.bpf.c (one module: one set
 * of rings, pb_tuple_hash and pb_sock_tuple_of) when PB_TLS is defined.
 * User space (agent/capture/tlsprobes.py) attaches:
 *
 *   uprobe + uretprobe  SSL_read, SSL_write (curl, nginx, redis, libpq) and
 *                       SSL_read_ex, SSL_write_ex (CPython): they do not call
 *                       each other.  The entry remembers the call by thread
 *                       (`tls_calls`); the return reads the buffer.
 *   uprobe + uretprobe  SSL_do_handshake, only to meet the socket early.
 *   uprobe              SSL_free: the connection's plaintext ends.
 *   raw tracepoints     sock_send_length, sock_recv_length: they run in the
 *                       calling thread during the SSL call, so the socket
 *                       they name is the SSL object's (SSL_get_fd cannot be
 *                       called from here, and curl's BIO hides the fd).
 *                       The SSL object's socket, addresses and role are
 *                       kept in `tls_conns`.
 *   raw tracepoint      sched_process_exec: tells the parent a program
 *                       started (it may map a library not probed yet).
 *
 * Only connections with a plaintext port (`tls_ports`, filled by user space)
 * at one end are sent: the port says which end is the server.  A record
 * goes to the ring of the worker that decodes the connection's packets (the
 * same symmetric hash as the TC program), split in PB_TLS_CHUNK pieces.
 *
 * When both ends of a connection are traced (curl and nginx on one host),
 * only the client's plaintext is sent: the client marks the connection in
 * `tls_clients` at its first socket I/O inside an SSL call, which happens
 * before the server can read anything of it; the server's calls on a marked
 * connection are counted (PB_T_OTHER_SIDE) and not sent.  The mark stays until
 * the server's SSL_free (or LRU eviction, when the server is not traced).
 *
 * Compile-time parameters: PB_TLS_MAX_CONNS, PB_TLS_MAX_THREADS,
 * PB_TLS_MAX_PORTS, PB_TLS_EXEC_PAGES; PB_TLS_CHUNK, PB_TLS_MAX_CHUNKS (tls.h).
 */
#include <uapi/linux/ptrace.h>
#include "tls.h"

#ifndef PB_TLS_MAX_CONNS
#define PB_TLS_MAX_CONNS 16384
#endif
#ifndef PB_TLS_MAX_THREADS
#define PB_TLS_MAX_THREADS 16384
#endif
#ifndef PB_TLS_MAX_PORTS
#define PB_TLS_MAX_PORTS 1024
#endif
#ifndef PB_TLS_EXEC_PAGES
#define PB_TLS_EXEC_PAGES 16
#endif

#define PB_TLS_KIND_READ 1
#define PB_TLS_KIND_WRITE 2
#define PB_TLS_KIND_HANDSHAKE 3

/* An SSL call in progress, by thread. */
struct pb_tls_call {
    u64 ssl;
    u64 buf;
    u64 count_ptr;         /* _ex: where the byte count is written (size_t *); 0 otherwise */
    u64 sk;                /* the socket met during the call, 0 while none */
    u32 kind;              /* PB_TLS_KIND_* */
    u32 pad;
};

struct pb_tls_conn_key {
    u64 ssl;
    u32 tgid;
    u32 pad;
};

/* What is known of an SSL object's connection. */
struct pb_tls_conn {
    struct pb_sock_tuple tu;
    u64 sk;
    u64 offset[2];         /* plaintext bytes so far, by PB_TLS_SENT/RECEIVED */
    u32 ring;
    u8 role;               /* PB_TLS_ROLE_*; UNKNOWN: no plaintext port, nothing is sent */
    u8 sent;               /* a record was sent: SSL_free sends a close record */
    u8 pad[2];
};

/* The two ends of a connection, the client's first.  Without the network
 * namespace: the two ends of a connection between namespaces see the same. */
struct pb_tls_pair {
    u8 caddr[16];
    u8 saddr[16];
    u16 cport;
    u16 sport;
    u8 family;
    u8 pad[3];
};

struct pb_tls_full {
    struct pb_tls_record rec; /* must be followed directly by data: both go to the ring as one */
    u8 data[PB_TLS_CHUNK];
};

BPF_TABLE("lru_hash", u64, struct pb_tls_call, tls_calls, PB_TLS_MAX_THREADS);
BPF_TABLE("lru_hash", struct pb_tls_conn_key, struct pb_tls_conn, tls_conns, PB_TLS_MAX_CONNS);
BPF_TABLE("lru_hash", struct pb_tls_pair, u8, tls_clients, PB_TLS_MAX_CONNS);
BPF_HASH(tls_ports, u16, u8, PB_TLS_MAX_PORTS);
BPF_PERCPU_ARRAY(tls_counters, struct pb_tls_counters, 1);
BPF_PERCPU_ARRAY(tls_scratch, struct pb_tls_full, 1);
BPF_RINGBUF_OUTPUT(tls_execs, PB_TLS_EXEC_PAGES);

static __always_inline void tls_count(u32 which, u64 n)
{
    u32 zero = 0;
    struct pb_tls_counters *c = tls_counters.lookup(&zero);
    if (c && which < PB_T_MAX)
        c->c[which] += n;
}

/* ---- calls ----------------------------------------------------------------------- */

static __always_inline int call_enter(struct pt_regs *ctx, u32 kind, int ex)
{
    u64 id = bpf_get_current_pid_tgid();
    struct pb_tls_call call = {};
    call.ssl = PT_REGS_PARM1(ctx);
    call.buf = PT_REGS_PARM2(ctx);
    call.count_ptr = ex ? PT_REGS_PARM4(ctx) : 0;
    call.kind = kind;
    if (kind == PB_TLS_KIND_HANDSHAKE) {
        tls_calls.insert(&id, &call); /* never hides a read or write it is nested in */
        return 0;
    }
    tls_calls.update(&id, &call);
    return 0;
}

static __always_inline void tls_pair_of(struct pb_sock_tuple *tu, u8 role, struct pb_tls_pair *p)
{
    __builtin_memset(p, 0, sizeof(*p));
    p->family = tu->family;
    if (role == PB_TLS_ROLE_CLIENT) {
        __builtin_memcpy(p->caddr, tu->laddr, 16);
        __builtin_memcpy(p->saddr, tu->raddr, 16);
        p->cport = tu->lport;
        p->sport = tu->rport;
    } else {
        __builtin_memcpy(p->caddr, tu->raddr, 16);
        __builtin_memcpy(p->saddr, tu->laddr, 16);
        p->cport = tu->rport;
        p->sport = tu->lport;
    }
}

/* The socket an SSL call is using: remember it for the SSL object. */
static __always_inline int tls_on_io(void *sk)
{
    u64 id = bpf_get_current_pid_tgid();
    struct pb_tls_call *call = tls_calls.lookup(&id);
    if (!call || call->sk || !sk)
        return 0;
    call->sk = (u64)sk;
    struct pb_tls_conn_key key = {.ssl = call->ssl, .tgid = id >> 32, .pad = 0};
    struct pb_tls_conn *known = tls_conns.lookup(&key);
    if (known && known->sk == (u64)sk)
        return 0;
    struct pb_tls_conn conn;
    __builtin_memset(&conn, 0, sizeof(conn));
    if (pb_sock_tuple_of(sk, &conn.tu) < 0 || conn.tu.l4proto != IPPROTO_TCP)
        return 0;
    conn.sk = (u64)sk;
    u16 lport = conn.tu.lport, rport = conn.tu.rport;
    if (tls_ports.lookup(&lport))
        conn.role = PB_TLS_ROLE_SERVER;
    else if (tls_ports.lookup(&rport))
        conn.role = PB_TLS_ROLE_CLIENT;
    conn.ring = pb_tuple_hash(conn.tu.laddr, conn.tu.raddr, conn.tu.lport, conn.tu.rport, 1) % PB_WORKERS;
    if (tls_conns.update(&key, &conn) != 0)
        tls_count(PB_T_CONNS_FAILED, 1);
    if (conn.role == PB_TLS_ROLE_CLIENT) {
        struct pb_tls_pair pair;
        u8 one = 1;
        tls_pair_of(&conn.tu, conn.role, &pair);
        tls_clients.update(&pair, &one);
    }
    return 0;
}

/* One record: `len` bytes at buf + off, the header already filled but for offset and len.  0 on failure. */
static __always_inline int emit_chunk(struct pb_tls_full *s, u32 ring, u64 base, u64 off, u64 len, u64 buf)
{
    s->rec.offset = base + off;
    s->rec.len = len;
    /* Hide what the compiler knows about len, so that it tests the very register it passes. */
    asm volatile("" : "+r"(len));
    if (len < 1 || len > PB_TLS_CHUNK)
        return 0;
    if (bpf_probe_read_user(s->data, len, (const void *)(buf + off)) < 0) {
        tls_count(PB_T_READ_FAILED, 1);
        return 0;
    }
    /* One retry: a failed reserve may be a lost race on the ring's lock, not a full ring. */
    if (ring_output(ring, s, sizeof(struct pb_tls_record) + len, BPF_RB_NO_WAKEUP) < 0 &&
        ring_output(ring, s, sizeof(struct pb_tls_record) + len, BPF_RB_NO_WAKEUP) < 0) {
        tls_count(PB_T_RING_FULL, 1);
        return 0;
    }
    tls_count(PB_T_RECORDS, 1);
    tls_count(PB_T_BYTES, len);
    return 1;
}

/* Copies `n` plaintext bytes at `buf` into records for the connection's worker: whole chunks in
 * a loop (one path goes on per round, so the verifier's work grows linearly), then the rest. */
static __always_inline void send_plaintext(struct pb_tls_conn *conn, struct pb_tls_conn_key *key, u32 dir, u64 buf,
                                           u64 n)
{
    u32 zero = 0;
    struct pb_tls_full *s = tls_scratch.lookup(&zero);
    if (!s || dir > 1)
        return;
    struct pb_tls_record *r = &s->rec;
    r->marker = PB_TLS_MARKER;
    r->ts_ns = bpf_ktime_get_boot_ns();
    r->ssl = key->ssl;
    r->tgid = key->tgid;
    r->netns = conn->tu.netns;
    r->lport = conn->tu.lport;
    r->rport = conn->tu.rport;
    r->family = conn->tu.family;
    r->direction = dir;
    r->role = conn->role;
    __builtin_memcpy(r->laddr, conn->tu.laddr, 16);
    __builtin_memcpy(r->raddr, conn->tu.raddr, 16);
    u64 base = conn->offset[dir];
    u64 limit = (u64)PB_TLS_CHUNK * PB_TLS_MAX_CHUNKS;
    u64 keep = n > limit ? limit : n;
    if (n > limit)
        tls_count(PB_T_TRUNCATED, 1);
    r->missing = n - keep; /* meaningful in the last record only */
    u32 ring = conn->ring;
    conn->offset[dir] = base + n;
    conn->sent = 1;
    u64 full = keep / PB_TLS_CHUNK;
    u64 rest = keep - full * PB_TLS_CHUNK;
    u32 i;
#pragma clang loop unroll(disable)
    for (i = 0; i < PB_TLS_MAX_CHUNKS; i++) {
        if (i >= full)
            break;
        r->flags = (i + 1 == full && rest == 0) ? PB_TLS_F_LAST_CHUNK : 0;
        if (!emit_chunk(s, ring, base, (u64)i * PB_TLS_CHUNK, PB_TLS_CHUNK, buf))
            return;
    }
    if (rest > 0) {
        r->flags = PB_TLS_F_LAST_CHUNK;
        emit_chunk(s, ring, base, full * PB_TLS_CHUNK, rest, buf);
    }
}

static __always_inline int call_return(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    struct pb_tls_call *found = tls_calls.lookup(&id);
    if (!found) {
        tls_count(PB_T_CALLS_LOST, 1);
        return 0;
    }
    struct pb_tls_call call = *found;
    tls_calls.delete(&id);
    if (call.kind == PB_TLS_KIND_HANDSHAKE)
        return 0;
    tls_count(PB_T_CALLS, 1);
    int ret = (int)PT_REGS_RC(ctx);
    u64 n = 0;
    if (call.count_ptr) {
        if (ret == 1)
            bpf_probe_read_user(&n, sizeof(n), (const void *)call.count_ptr);
    } else if (ret > 0) {
        n = (u64)ret;
    }
    if (n == 0) {
        tls_count(PB_T_FAILED, 1);
        return 0;
    }
    struct pb_tls_conn_key key = {.ssl = call.ssl, .tgid = id >> 32, .pad = 0};
    struct pb_tls_conn *conn = tls_conns.lookup(&key);
    if (!conn) {
        tls_count(PB_T_NO_SOCKET, 1);
        return 0;
    }
    u32 dir = call.kind == PB_TLS_KIND_WRITE ? PB_TLS_SENT : PB_TLS_RECEIVED;
    if (conn->role == PB_TLS_ROLE_UNKNOWN) {
        tls_count(PB_T_OTHER_PORT, 1);
        return 0;
    }
    if (conn->role == PB_TLS_ROLE_SERVER) {
        struct pb_tls_pair pair;
        tls_pair_of(&conn->tu, conn->role, &pair);
        if (tls_clients.lookup(&pair)) {
            conn->offset[dir] += n;
            tls_count(PB_T_OTHER_SIDE, 1);
            return 0;
        }
    }
    send_plaintext(conn, &key, dir, call.buf, n);
    return 0;
}

/* ---- entry points ------------------------------------------------------------------ */

/* int SSL_read(SSL *ssl, void *buf, int num) */
int pb_tls_read_enter(struct pt_regs *ctx) { return call_enter(ctx, PB_TLS_KIND_READ, 0); }
/* int SSL_write(SSL *ssl, const void *buf, int num) */
int pb_tls_write_enter(struct pt_regs *ctx) { return call_enter(ctx, PB_TLS_KIND_WRITE, 0); }
/* int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes) */
int pb_tls_read_ex_enter(struct pt_regs *ctx) { return call_enter(ctx, PB_TLS_KIND_READ, 1); }
/* int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written) */
int pb_tls_write_ex_enter(struct pt_regs *ctx) { return call_enter(ctx, PB_TLS_KIND_WRITE, 1); }
/* int SSL_do_handshake(SSL *ssl) */
int pb_tls_handshake_enter(struct pt_regs *ctx) { return call_enter(ctx, PB_TLS_KIND_HANDSHAKE, 0); }
/* The return of any of them. */
int pb_tls_return(struct pt_regs *ctx) { return call_return(ctx); }

/* void SSL_free(SSL *ssl) */
int pb_tls_free(struct pt_regs *ctx)
{
    struct pb_tls_conn_key key = {.ssl = PT_REGS_PARM1(ctx), .tgid = bpf_get_current_pid_tgid() >> 32, .pad = 0};
    struct pb_tls_conn *conn = tls_conns.lookup(&key);
    if (!conn)
        return 0;
    /* The mark goes with the server's end: after the client's SSL_free the server may still read
     * what the client sent last (nginx discarding a request body), and that is the client's already. */
    if (conn->role == PB_TLS_ROLE_SERVER) {
        struct pb_tls_pair pair;
        tls_pair_of(&conn->tu, conn->role, &pair);
        tls_clients.delete(&pair);
    }
    if (conn->sent) {
        struct pb_tls_record r;
        __builtin_memset(&r, 0, sizeof(r));
        r.marker = PB_TLS_MARKER;
        r.ts_ns = bpf_ktime_get_boot_ns();
        r.ssl = key.ssl;
        r.tgid = key.tgid;
        r.netns = conn->tu.netns;
        r.lport = conn->tu.lport;
        r.rport = conn->tu.rport;
        r.family = conn->tu.family;
        r.role = conn->role;
        r.flags = PB_TLS_F_CLOSE;
        __builtin_memcpy(r.laddr, conn->tu.laddr, 16);
        __builtin_memcpy(r.raddr, conn->tu.raddr, 16);
        if (ring_output(conn->ring, &r, sizeof(r), BPF_RB_NO_WAKEUP) < 0 &&
            ring_output(conn->ring, &r, sizeof(r), BPF_RB_NO_WAKEUP) < 0)
            tls_count(PB_T_RING_FULL, 1);
        tls_count(PB_T_CLOSED, 1);
    }
    tls_conns.delete(&key);
    return 0;
}

/* sock_send_length(struct sock *sk, int ret, int flags) */
int pb_tls_sock_send(struct bpf_raw_tracepoint_args *ctx)
{
    return tls_on_io((void *)ctx->args[0]);
}

/* sock_recv_length(struct sock *sk, int ret, int flags) */
int pb_tls_sock_recv(struct bpf_raw_tracepoint_args *ctx)
{
    return tls_on_io((void *)ctx->args[0]);
}

/* sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm) */
int pb_tls_exec(struct bpf_raw_tracepoint_args *ctx)
{
    struct pb_tls_exec e = {.tgid = bpf_get_current_pid_tgid() >> 32, .pad = 0};
    if (tls_execs.ringbuf_output(&e, sizeof(e), BPF_RB_NO_WAKEUP) < 0)
        tls_count(PB_T_EXECS_LOST, 1);
    else
        tls_count(PB_T_EXECS, 1);
    return 0;
}
