/* T threads, each making N getppid(2) calls through syscall(2), all in one process: with the
 * threads on different CPUs they hit the same (process, getppid) histogram at once, which is
 * what costs most with one shared copy and atomic adds. Prints "calls cpu_ns wall_ns" for the
 * loops only (process CPU time, user + sys, of all threads; wall time from the start signal
 * to the last join), like getppid_bench. Usage: getppid_threads N [T]. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long calls;
static pthread_barrier_t start;

static long long ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void *loop(void *arg) {
    (void)arg;
    pthread_barrier_wait(&start);
    for (long i = 0; i < calls; i++)
        syscall(SYS_getppid);
    return NULL;
}

int main(int argc, char **argv) {
    calls = argc > 1 ? atol(argv[1]) : 1000000;
    int t = argc > 2 ? atoi(argv[2]) : 2;
    if (t < 1 || t > 64)
        return 1;
    pthread_t th[64];
    pthread_barrier_init(&start, NULL, t + 1);
    for (int i = 0; i < t; i++)
        if (pthread_create(&th[i], NULL, loop, NULL))
            return 1;
    long long c0 = ns(CLOCK_PROCESS_CPUTIME_ID), w0 = ns(CLOCK_MONOTONIC);
    pthread_barrier_wait(&start);
    for (int i = 0; i < t; i++)
        pthread_join(th[i], NULL);
    long long c1 = ns(CLOCK_PROCESS_CPUTIME_ID), w1 = ns(CLOCK_MONOTONIC);
    printf("%ld %lld %lld\n", calls * t, c1 - c0, w1 - w0);
    return 0;
}
