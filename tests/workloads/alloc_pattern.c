/* Makes a known pattern of libc allocations. Protocol over stdin/stdout:
 *   "started"  then waits for a line (the test waits until the agent has attached)
 *   M mallocs of 100 + (i * 37) % 1000 bytes (100..=1099), M/10 callocs of (1 + j % 4) x 50
 *   bytes, each calloc'd block then realloc'd to 2000 + j bytes, and free of every
 *   even-numbered malloc'd block (ceil(M/2) calls), then M/1000 times realloc(NULL, 300)
 *   followed by realloc(that, 0), which frees it;
 *   "ready"    then waits for a line (or EOF) and exits without freeing the rest.
 * Sizes and counts are what tests/uprobes.rs computes independently. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long m = argc > 1 ? atol(argv[1]) : 0;
    long k = m / 10;
    char line[64];
    /* stdio's buffers are static, so stdio allocates nothing. Left to glibc, the first read of
     * stdin mallocs 4096 bytes right after "started": the probes, attached at exec, counted it
     * whenever the test's first reading came before it (CI-like load made the test flaky). */
    static char out_buf[BUFSIZ], in_buf[BUFSIZ];
    setvbuf(stdout, out_buf, _IOLBF, sizeof out_buf);
    setvbuf(stdin, in_buf, _IOFBF, sizeof in_buf);
    printf("started\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 2;
    void **p = m ? malloc(sizeof(void *) * m) : NULL; /* one more malloc when m > 0 */
    void **q = k ? malloc(sizeof(void *) * k) : NULL; /* and one more when k > 0 */
    for (long i = 0; i < m; i++) {
        p[i] = malloc(100 + (i * 37) % 1000);
        if (!p[i])
            return 3;
        ((volatile char *)p[i])[0] = 1;
    }
    for (long j = 0; j < k; j++) {
        q[j] = calloc(1 + j % 4, 50);
        if (!q[j])
            return 4;
    }
    for (long j = 0; j < k; j++) {
        void *r = realloc(q[j], 2000 + j);
        if (!r)
            return 5;
        q[j] = r;
    }
    for (long i = 0; i < m; i += 2)
        free(p[i]);
    /* glibc's realloc calls malloc and free itself for these: each must count as one realloc. */
    for (long j = 0; j < k / 100; j++) {
        void *volatile none = NULL; /* volatile: gcc would turn realloc(NULL, n) into malloc */
        void *r = realloc(none, 300); /* like malloc(300) */
        if (!r)
            return 6;
        if (realloc(r, 0) != NULL) /* frees r (glibc returns NULL) */
            return 7;
    }
    printf("ready\n");
    fflush(stdout);
    fgets(line, sizeof line, stdin);
    return 0;
}
