/* Makes exactly N getppid(2) calls through syscall(2), then exits.
 * glibc's startup and exit make no getppid calls, so the kernel sees exactly N. */
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    return 0;
}
