/* N getppid(2) calls through syscall(2); prints "calls cpu_ns wall_ns" measured around the
 * loop only (CPU time of this process, user + sys, from CLOCK_PROCESS_CPUTIME_ID), so
 * process start-up and exit are not counted. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "loop_timer.h"

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    struct loop_timer timer = loop_start();
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    loop_report(n, timer);
    return 0;
}
