/* FAST nanosleep(2) calls of 0 ns, then SLOW calls of MS milliseconds, through syscall(2). */
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long fast = argc > 1 ? atol(argv[1]) : 0;
    long slow = argc > 2 ? atol(argv[2]) : 0;
    long ms = argc > 3 ? atol(argv[3]) : 20;
    struct timespec zero = { 0, 0 };
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    for (long i = 0; i < fast; i++)
        syscall(SYS_nanosleep, &zero, NULL);
    for (long i = 0; i < slow; i++)
        syscall(SYS_nanosleep, &ts, NULL);
    return 0;
}
