/* Socket I/O that is not TCP: N rounds of a 64-byte write and read on a Unix stream socket
 * pair, 2 syscalls a round. The HTTP probe's socket tracepoints fire for these calls too; they
 * should return at the socket's family. Prints "calls cpu_ns wall_ns" for the loop only (like
 * getppid_bench). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop_timer.h"

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 500000;
    int s[2];
    char buf[64] = {0};
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, s)) {
        perror("unix_rw");
        return 1;
    }
    struct loop_timer timer = loop_start();
    for (long i = 0; i < n; i++) {
        if (write(s[0], buf, sizeof buf) != sizeof buf || read(s[1], buf, sizeof buf) != sizeof buf) {
            perror("unix_rw");
            return 1;
        }
    }
    loop_report(2 * n, timer);
    return 0;
}
