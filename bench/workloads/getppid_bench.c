/* N getppid(2) calls through syscall(2); prints "calls cpu_ns wall_ns" measured around the
 * loop only (CPU time of this process, user + sys, from CLOCK_PROCESS_CPUTIME_ID), so
 * process start-up and exit are not counted. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    long long c0 = ns(CLOCK_PROCESS_CPUTIME_ID), w0 = ns(CLOCK_MONOTONIC);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    long long c1 = ns(CLOCK_PROCESS_CPUTIME_ID), w1 = ns(CLOCK_MONOTONIC);
    printf("%ld %lld %lld\n", n, c1 - c0, w1 - w0);
    return 0;
}
