/* A mixed syscall workload: N rounds of small reads and writes, 4 syscalls a round:
 * write 64 bytes into a pipe and read them back, read 256 bytes of /dev/zero, write them to
 * /dev/null. Prints "calls cpu_ns wall_ns" for the loop only (like getppid_bench). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 250000;
    int p[2];
    char buf[256] = {0};
    int zero = open("/dev/zero", O_RDONLY), null = open("/dev/null", O_WRONLY);
    if (pipe(p) || zero < 0 || null < 0) {
        perror("rw_mix");
        return 1;
    }
    long long c0 = ns(CLOCK_PROCESS_CPUTIME_ID), w0 = ns(CLOCK_MONOTONIC);
    for (long i = 0; i < n; i++) {
        if (write(p[1], buf, 64) != 64 || read(p[0], buf, 64) != 64 ||
            read(zero, buf, sizeof buf) != sizeof buf ||
            write(null, buf, sizeof buf) != sizeof buf) {
            perror("rw_mix");
            return 1;
        }
    }
    long long c1 = ns(CLOCK_PROCESS_CPUTIME_ID), w1 = ns(CLOCK_MONOTONIC);
    printf("%ld %lld %lld\n", 4 * n, c1 - c0, w1 - w0);
    return 0;
}
