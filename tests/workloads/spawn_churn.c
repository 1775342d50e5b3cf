/* Starts N short-lived processes (/bin/true), P at a time, and waits for all of them. */
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>

extern char **environ;

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    long p = argc > 2 ? atol(argv[2]) : 4;
    char *args[] = { "/bin/true", NULL };
    long running = 0, failed = 0;
    for (long i = 0; i < n; i++) {
        pid_t pid;
        if (running == p) {
            int st;
            if (wait(&st) > 0)
                running--;
        }
        if (posix_spawn(&pid, "/bin/true", NULL, NULL, args, environ) == 0)
            running++;
        else
            failed++;
    }
    while (running > 0) {
        int st;
        if (wait(&st) > 0)
            running--;
        else
            break;
    }
    return failed ? 1 : 0;
}
