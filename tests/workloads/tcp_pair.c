/* TCP workload for the retransmit test: one connection, data in one direction, and no
 * side exits before everything it sent was acknowledged (so no retransmit happens after the
 * sender exited).
 *   tcp_pair server PORT BYTES [6]  accept one connection, over IPv6 with "6" (prints
 *                                   "ready" once listening)
 *   tcp_pair client ADDRESS PORT BYTES [DELAY_MS]  connect to an IPv4 or IPv6 address (and
 *                                   wait DELAY_MS before writing)
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
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "server") == 0) {
        int one = 1;
        int v6 = argc == 5 && strcmp(argv[4], "6") == 0;
        int ls = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
        if (ls < 0)
            die("socket");
        setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[2]))};
        if (v6) {
            setsockopt(ls, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
            if (bind(ls, (struct sockaddr *)&a6, sizeof a6))
                die("bind");
        } else if (bind(ls, (struct sockaddr *)&a, sizeof a)) {
            die("bind");
        }
        if (listen(ls, 1))
            die("listen");
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
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[3]))};
        int v6 = strchr(argv[2], ':') != NULL;
        if (v6 ? inet_pton(AF_INET6, argv[2], &a6.sin6_addr) != 1
               : inet_pton(AF_INET, argv[2], &a.sin_addr) != 1)
            die("address");
        int s = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
        if (s < 0)
            die("socket");
        if (v6 ? connect(s, (struct sockaddr *)&a6, sizeof a6)
               : connect(s, (struct sockaddr *)&a, sizeof a))
            die("connect");
        if (argc == 6)
            usleep(atol(argv[5]) * 1000);
        exchange(s, atol(argv[4]));
        return 0;
    }
    fprintf(stderr, "usage: tcp_pair server PORT BYTES [6] | client ADDRESS PORT BYTES [DELAY_MS]\n");
    return 2;
}
