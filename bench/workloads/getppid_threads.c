/* T threads, each making N getppid(2) calls through syscall(2), all in one process: with the
 * threads on different CPUs they hit the same (process, getppid) histogram at once, which is
 * what costs most with one shared copy and atomic adds. Prints "calls cpu_ns wall_ns" for the
 * loops only (process CPU time, user + sys, of all threads; wall time from the start signal
 * to the last join), like getppid_bench. Usage: getppid_threads N [T]. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "loop_timer.h"

static long calls;
static pthread_barrier_t start;

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
    struct loop_timer timer = loop_start();
    pthread_barrier_wait(&start);
    for (int i = 0; i < t; i++)
        pthread_join(th[i], NULL);
    loop_report(calls * t, timer);
    return 0;
}
