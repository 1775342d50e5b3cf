/* Phases driven over stdin: "slow MS" sleeps MS ms per nanosleep(2) call and prints "cond"
 * once 2 calls have completed; "fast" makes 0 ms calls (with a 1 ms pause every 100); "idle"
 * makes none; "quit" exits. Each command is acknowledged with "ok". */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void sleep_ns(long ns) {
    struct timespec ts = { ns / 1000000000L, ns % 1000000000L };
    syscall(SYS_nanosleep, &ts, NULL);
}

int main(void) {
    char line[64];
    enum { IDLE, SLOW, FAST } mode = IDLE;
    long ms = 0, done = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        struct pollfd p = { 0, POLLIN, 0 };
        int timeout = mode == IDLE ? -1 : 0;
        if (poll(&p, 1, timeout) > 0) {
            if (!fgets(line, sizeof line, stdin) || strncmp(line, "quit", 4) == 0)
                return 0;
            if (strncmp(line, "slow ", 5) == 0) {
                mode = SLOW;
                ms = atol(line + 5);
                done = 0;
            } else if (strncmp(line, "fast", 4) == 0) {
                mode = FAST;
            } else {
                mode = IDLE;
            }
            printf("ok\n");
            continue;
        }
        if (mode == SLOW) {
            sleep_ns(ms * 1000000L);
            if (++done == 2)
                printf("cond\n");
        } else if (mode == FAST) {
            for (int i = 0; i < 100; i++)
                sleep_ns(0);
            sleep_ns(1000000L);
        }
    }
}
