/* Sleeps MS milliseconds with glibc's nanosleep(3) (not syscall(2)), over and over, for
 * SECONDS seconds: glibc makes the clock_nanosleep syscall, not nanosleep. */
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    long ms = argc > 1 ? atol(argv[1]) : 20;
    long seconds = argc > 2 ? atol(argv[2]) : 60;
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    time_t end = time(NULL) + seconds;
    while (time(NULL) < end)
        nanosleep(&ts, NULL);
    return 0;
}
