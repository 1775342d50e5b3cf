/* TCP workload for the retransmit test.
 *   tcp_pair server PORT          accept one connection, read to EOF, close; prints "ready"
 *                                 once listening
 *   tcp_pair client IP PORT BYTES connect, send BYTES, shut down writing, wait for the
 *                                 server's close (so every byte and the FIN were acked), exit
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
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        ;
    if (n < 0)
        die("read");
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "server") == 0) {
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
        drain(c);
        close(c);
        close(ls);
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "client") == 0) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0)
            die("socket");
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1)
            die("address");
        if (connect(s, (struct sockaddr *)&a, sizeof a))
            die("connect");
        static char buf[65536];
        memset(buf, 'x', sizeof buf);
        long left = atol(argv[4]);
        while (left > 0) {
            ssize_t n = write(s, buf, left < (long)sizeof buf ? (size_t)left : sizeof buf);
            if (n <= 0)
                die("write");
            left -= n;
        }
        if (shutdown(s, SHUT_WR))
            die("shutdown");
        drain(s);
        close(s);
        return 0;
    }
    fprintf(stderr, "usage: tcp_pair server PORT | client IP PORT BYTES\n");
    return 2;
}
