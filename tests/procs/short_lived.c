/* Short-lived clients: forks COUNT children, PARALLEL at a time; each makes one HTTP/1.1 request with
 * "Connection: close", reads the response to the end and exits at once.  Prints the children's pids,
 * and on stderr "elapsed NS" for the whole run.  With PARALLEL 0 the process makes the COUNT
 * connections itself, one after the other (and prints its own pid).
 *
 *     short_lived HOST PORT COUNT PARALLEL
 *
 * Exits 1 when a connection failed.  Used by tests/procs/test_live_procs.py and bench/procs_bench.py:
 * a C client keeps the cost of each connection (fork, connect, exit) small next to what is measured. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int client(const struct sockaddr_in *addr)
{
    static const char request[] = "GET /index.html HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    char buf[4096];
    int fd = socket(AF_INET, SOCK_STREAM, 0), failed = 1;
    if (fd < 0)
        return 1;
    if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0 &&
        write(fd, request, sizeof(request) - 1) == (ssize_t)(sizeof(request) - 1)) {
        while (read(fd, buf, sizeof(buf)) > 0)
            ;
        failed = 0;
    }
    close(fd);
    return failed;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s HOST PORT COUNT PARALLEL\n", argv[0]);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1)
        return 2;
    int count = atoi(argv[3]), parallel = atoi(argv[4]), running = 0, failed = 0, status;
    long long start = now_ns();
    if (parallel == 0) {
        for (int i = 0; i < count; i++)
            failed += client(&addr);
        fprintf(stderr, "elapsed %lld\n", now_ns() - start);
        printf("%d\n", (int)getpid());
        return failed ? 1 : 0;
    }
    pid_t *pids = calloc((size_t)count, sizeof(pid_t));
    for (int i = 0; i < count; i++) {
        if (running >= parallel) {
            if (wait(&status) > 0 && status != 0)
                failed++;
            running--;
        }
        pid_t pid = fork();
        if (pid == 0)
            _exit(client(&addr));
        if (pid < 0)
            return 1;
        pids[i] = pid;
        running++;
    }
    while (running-- > 0)
        if (wait(&status) > 0 && status != 0)
            failed++;
    fprintf(stderr, "elapsed %lld\n", now_ns() - start);
    for (int i = 0; i < count; i++)
        printf("%d%c", pids[i], i + 1 < count ? ' ' : '\n');
    return failed ? 1 : 0;
}
