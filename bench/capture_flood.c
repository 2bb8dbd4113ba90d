/* A paced UDP flooder for bench/capture_bench.py (compiled at run time with gcc).
 *
 *   capture_flood DST_IP DST_PORT PPS SECONDS PAYLOAD_LEN SRC_IP [SRC_IP...]
 *
 * One connected socket per source address (each a separate flow), datagrams
 * sent with sendmmsg in batches of 64, round robin over the sockets, paced
 * against CLOCK_MONOTONIC so the offered rate is PPS on average.  Prints
 * "sent N elapsed_ns" at the end.  Payload bytes are 0xff.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_SOURCES 64

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s DST_IP DST_PORT PPS SECONDS PAYLOAD_LEN SRC_IP...\n", argv[0]);
        return 2;
    }
    const char *dst_ip = argv[1];
    int port = atoi(argv[2]);
    double pps = atof(argv[3]);
    double seconds = atof(argv[4]);
    int len = atoi(argv[5]);
    int nsrc = argc - 6;
    if (nsrc > MAX_SOURCES || len < 1 || len > 1400 || pps <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    int socks[MAX_SOURCES];
    for (int i = 0; i < nsrc; i++) {
        socks[i] = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons(40000 + i)};
        struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
        inet_pton(AF_INET, argv[6 + i], &src.sin_addr);
        inet_pton(AF_INET, dst_ip, &dst.sin_addr);
        int sndbuf = 4 << 20;
        setsockopt(socks[i], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        if (bind(socks[i], (struct sockaddr *)&src, sizeof(src)) || connect(socks[i], (struct sockaddr *)&dst,
                                                                             sizeof(dst))) {
            perror("bind/connect");
            return 1;
        }
    }
    char payload[1400];
    memset(payload, 0xff, sizeof(payload));
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = payload;
        iov[i].iov_len = len;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long start = now_ns();
    long long end = start + (long long)(seconds * 1e9);
    long long sent = 0;
    int which = 0;
    for (;;) {
        long long t = now_ns();
        if (t >= end)
            break;
        long long due = (long long)((t - start) * pps / 1e9);
        if (sent >= due) {
            long long wait = (long long)((sent + BATCH - due) * 1e9 / pps);
            struct timespec ts = {.tv_sec = wait / 1000000000LL, .tv_nsec = wait % 1000000000LL};
            if (wait > 20000)
                nanosleep(&ts, NULL);
            continue;
        }
        int n = sendmmsg(socks[which], msgs, BATCH, 0);
        if (n > 0)
            sent += n;
        else if (errno != EAGAIN && errno != ENOBUFS) {
            perror("sendmmsg");
            return 1;
        }
        which = (which + 1) % nsrc;
    }
    printf("sent %lld elapsed_ns %lld\n", sent, now_ns() - start);
    return 0;
}
