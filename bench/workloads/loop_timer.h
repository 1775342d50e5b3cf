/* The overhead workloads' timing (`cargo xtask bench`, section 1): each times its loop only
 * and prints "calls cpu_ns wall_ns": the process's CPU time (user + sys, of all its threads)
 * and the wall time spent in the loop. */
#include <stdio.h>
#include <time.h>

struct loop_timer {
    long long cpu_ns, wall_ns;
};

static long long loop_ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static struct loop_timer loop_start(void) {
    struct loop_timer t;
    t.cpu_ns = loop_ns(CLOCK_PROCESS_CPUTIME_ID);
    t.wall_ns = loop_ns(CLOCK_MONOTONIC);
    return t;
}

/* Prints the line for `calls` syscalls made since `start`. */
static void loop_report(long calls, struct loop_timer start) {
    long long cpu = loop_ns(CLOCK_PROCESS_CPUTIME_ID) - start.cpu_ns;
    long long wall = loop_ns(CLOCK_MONOTONIC) - start.wall_ns;
    printf("%ld %lld %lld\n", calls, cpu, wall);
}
