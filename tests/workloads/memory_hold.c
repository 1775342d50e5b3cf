/* Allocates and touches MB mebibytes, prints "ready", holds until a line (or EOF) on stdin. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    long mb = argc > 1 ? atol(argv[1]) : 0;
    char *p = malloc(mb << 20);
    char line[64];
    if (!p)
        return 1;
    memset(p, 1, mb << 20);
    printf("ready\n");
    fflush(stdout);
    fgets(line, sizeof line, stdin);
    return p[mb] == 1 ? 0 : 3;
}
