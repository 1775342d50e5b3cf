/* FAST nanosleep(2) calls of 0 ns, then SLOW calls of MS milliseconds, through syscall(2).
 * With a fourth argument LATE_MS, prints how many of the FAST calls took at least LATE_MS as
 * this program measured them (CLOCK_MONOTONIC around the call): on a loaded host or under
 * software emulation a 0 ns sleep can take that long, and the kernel then sees it too. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    long fast = argc > 1 ? atol(argv[1]) : 0;
    long slow = argc > 2 ? atol(argv[2]) : 0;
    long ms = argc > 3 ? atol(argv[3]) : 20;
    long long late_ns = argc > 4 ? atol(argv[4]) * 1000000LL : 0;
    struct timespec zero = { 0, 0 };
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    long late = 0;
    for (long i = 0; i < fast; i++) {
        long long t0 = late_ns ? now_ns() : 0;
        syscall(SYS_nanosleep, &zero, NULL);
        if (late_ns && now_ns() - t0 >= late_ns)
            late++;
    }
    for (long i = 0; i < slow; i++)
        syscall(SYS_nanosleep, &ts, NULL);
    if (late_ns)
        printf("%ld\n", late);
    return 0;
}
