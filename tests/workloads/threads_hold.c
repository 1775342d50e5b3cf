/* Starts K threads that block, prints "ready", waits for a line on stdin, releases and joins
 * the threads, prints "joined", waits for another line (or EOF), exits. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int released;

static void *hold(void *arg) {
    (void)arg;
    pthread_mutex_lock(&mu);
    while (!released)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(int argc, char **argv) {
    int k = argc > 1 ? atoi(argv[1]) : 0;
    pthread_t *t = calloc(k, sizeof *t);
    char line[64];
    for (int i = 0; i < k; i++)
        if (pthread_create(&t[i], NULL, hold, NULL) != 0)
            return 1;
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 2;
    pthread_mutex_lock(&mu);
    released = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < k; i++)
        pthread_join(t[i], NULL);
    printf("joined\n");
    fflush(stdout);
    fgets(line, sizeof line, stdin);
    return 0;
}
