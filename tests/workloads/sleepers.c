/* Forks N children that sleep until stdin closes (they are all killed with the parent's
 * process group by the test), prints "ready". */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            pause();
            _exit(0);
        }
        if (pid < 0)
            return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char line[8];
    fgets(line, sizeof line, stdin);
    return 0;
}
