/* Socket I/O that is not TCP: N rounds of a 64-byte write and read on a Unix stream socket
 * pair, 2 syscalls a round. The HTTP probe's socket tracepoints fire for these calls too; they
 * should return at the socket's family. Prints "calls cpu_ns wall_ns" for the loop only (like
 * getppid_bench). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 500000;
    int s[2];
    char buf[64] = {0};
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, s)) {
        perror("unix_rw");
        return 1;
    }
    long long c0 = ns(CLOCK_PROCESS_CPUTIME_ID), w0 = ns(CLOCK_MONOTONIC);
    for (long i = 0; i < n; i++) {
        if (write(s[0], buf, sizeof buf) != sizeof buf || read(s[1], buf, sizeof buf) != sizeof buf) {
            perror("unix_rw");
            return 1;
        }
    }
    long long c1 = ns(CLOCK_PROCESS_CPUTIME_ID), w1 = ns(CLOCK_MONOTONIC);
    printf("%ld %lld %lld\n", 2 * n, c1 - c0, w1 - w0);
    return 0;
}
