/* A mixed syscall workload: N rounds of small reads and writes, 4 syscalls a round:
 * write 64 bytes into a pipe and read them back, read 256 bytes of /dev/zero, write them to
 * /dev/null. Prints "calls cpu_ns wall_ns" for the loop only (like getppid_bench). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "loop_timer.h"

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 250000;
    int p[2];
    char buf[256] = {0};
    int zero = open("/dev/zero", O_RDONLY), null = open("/dev/null", O_WRONLY);
    if (pipe(p) || zero < 0 || null < 0) {
        perror("rw_mix");
        return 1;
    }
    struct loop_timer timer = loop_start();
    for (long i = 0; i < n; i++) {
        if (write(p[1], buf, 64) != 64 || read(p[0], buf, 64) != 64 ||
            read(zero, buf, sizeof buf) != sizeof buf ||
            write(null, buf, sizeof buf) != sizeof buf) {
            perror("rw_mix");
            return 1;
        }
    }
    loop_report(4 * n, timer);
    return 0;
}
