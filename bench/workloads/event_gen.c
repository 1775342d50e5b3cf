/* Makes getpgid(0) calls at RATE per second (0: as fast as it can) for SECONDS, paced in
 * 1 ms steps: after each sleep it makes the calls the elapsed time owes, so the rate holds
 * even when a sleep overshoots. With a 1 ns slow threshold on getpgid every call is one
 * slow-syscall event. Prints "calls wall_ns". */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    double rate = argc > 1 ? atof(argv[1]) : 0;
    double secs = argc > 2 ? atof(argv[2]) : 1;
    long long start = now(), end = start + (long long)(secs * 1e9), t = start;
    long calls = 0;
    struct timespec step = {0, 1000000};
    while (t < end) {
        long owed = rate > 0 ? (long)((t - start) * rate / 1e9) - calls : 1000;
        for (long i = 0; i < owed; i++)
            syscall(SYS_getpgid, 0);
        calls += owed > 0 ? owed : 0;
        if (rate > 0)
            nanosleep(&step, NULL);
        t = now();
    }
    printf("%ld %lld\n", calls, now() - start);
    return 0;
}
