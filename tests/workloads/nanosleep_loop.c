/* Makes N nanosleep(2) calls of MS milliseconds each, through syscall(2) (glibc's
 * nanosleep() would use clock_nanosleep). */
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    long ms = argc > 2 ? atol(argv[2]) : 20;
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    for (long i = 0; i < n; i++)
        syscall(SYS_nanosleep, &ts, NULL);
    return 0;
}
