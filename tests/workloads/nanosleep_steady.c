/* A steady mix for SECONDS seconds: FAST nanosleep(2) calls of 0 ns, then one of MS
 * milliseconds, over and over, so any window of a few seconds holds the same share of slow
 * calls (FAST = 3: a quarter). */
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long fast = argc > 1 ? atol(argv[1]) : 3;
    long ms = argc > 2 ? atol(argv[2]) : 20;
    long seconds = argc > 3 ? atol(argv[3]) : 60;
    struct timespec zero = { 0, 0 };
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    time_t end = time(NULL) + seconds;
    while (time(NULL) < end) {
        for (long i = 0; i < fast; i++)
            syscall(SYS_nanosleep, &zero, NULL);
        syscall(SYS_nanosleep, &ts, NULL);
    }
    return 0;
}
