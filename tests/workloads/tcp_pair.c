/* TCP workload for the retransmit test: one connection, data in one direction, and no
 * side exits before everything it sent was acknowledged (so no retransmit happens after the
 * sender exited).
 *   tcp_pair server PORT BYTES     accept one connection (prints "ready" once listening)
 *   tcp_pair client IP PORT BYTES [DELAY_MS]  connect (and wait DELAY_MS before writing)
 * then each side writes BYTES; a side that wrote something shuts down writing and reads to
 * EOF (the peer closes only after reading all of it, so its data and FIN were acked); a side
 * that wrote nothing reads to EOF and then closes.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int die(const char *what) {
    perror(what);
    exit(1);
}

static void drain(int fd) {
    static char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        ;
    if (n < 0)
        die("read");
}

static void exchange(int s, long bytes) {
    static char buf[65536];
    memset(buf, 'x', sizeof buf);
    long left = bytes;
    while (left > 0) {
        ssize_t n = write(s, buf, left < (long)sizeof buf ? (size_t)left : sizeof buf);
        if (n <= 0)
            die("write");
        left -= n;
    }
    if (bytes > 0 && shutdown(s, SHUT_WR))
        die("shutdown");
    drain(s);
    close(s);
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "server") == 0) {
        int one = 1;
        int ls = socket(AF_INET, SOCK_STREAM, 0);
        if (ls < 0)
            die("socket");
        setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1))
            die("bind/listen");
        printf("ready\n");
        fflush(stdout);
        int c = accept(ls, NULL, NULL);
        if (c < 0)
            die("accept");
        close(ls);
        exchange(c, atol(argv[3]));
        return 0;
    }
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "client") == 0) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0)
            die("socket");
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1)
            die("address");
        if (connect(s, (struct sockaddr *)&a, sizeof a))
            die("connect");
        if (argc == 6)
            usleep(atol(argv[5]) * 1000);
        exchange(s, atol(argv[4]));
        return 0;
    }
    fprintf(stderr, "usage: tcp_pair server PORT BYTES | client IP PORT BYTES [DELAY_MS]\n");
    return 2;
}
