/* Makes exactly N sched_setaffinity(2) calls, each moving the calling thread to the next CPU
 * (round robin over the CPUs it may use), and after each one nanosleep(2) of SLEEP_US
 * microseconds: every affinity call starts on one CPU and returns on another (the thread is
 * migrated inside the call), and every sleep leaves the CPU.
 * Usage: cpu_hopper N SLEEP_US */
#define _GNU_SOURCE
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    long us = argc > 2 ? atol(argv[2]) : 100;
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0)
        return 1;
    int cpus[CPU_SETSIZE], ncpu = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &allowed))
            cpus[ncpu++] = c;
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    for (long i = 0; i < n; i++) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[(i + 1) % ncpu], &one);
        if (syscall(SYS_sched_setaffinity, 0, sizeof one, &one) != 0)
            return 2;
        if (syscall(SYS_nanosleep, &ts, NULL) != 0)
            return 3;
    }
    return 0;
}
