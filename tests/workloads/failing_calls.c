/* Makes N close(-1) calls (EBADF) and N openat calls of a missing file (ENOENT), through
 * syscall(2), then exits. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    for (long i = 0; i < n; i++) {
        syscall(SYS_close, -1);
        syscall(SYS_openat, AT_FDCWD, "/nonexistent-steadfast/x", O_RDONLY);
    }
    return 0;
}
