/* TCP connection workload for the connection probe's tests.
 *   conn_mix server PORT N MODE [6]   listen (on :: with "6", else 0.0.0.0), print "ready",
 *                                     accept N connections, one at a time:
 *       close   read each to EOF, then close it (a normal close on both sides)
 *       reset   close each at once with SO_LINGER 0 (the kernel sends a RST)
 *       hold    accept all N, print "held", wait for a line (or EOF) on stdin, close them
 *   conn_mix client ADDRESS PORT N MODE [TIMEOUT_MS]
 *       close   N times: connect, shutdown writing, read to EOF (the server closed), close;
 *               so every close has completed before the process exits
 *       refused N connects that must fail with ECONNREFUSED
 *       timeout N non-blocking connects at once; wait for each to fail (ETIMEDOUT, when the
 *               SYN retries run out) or, with TIMEOUT_MS > 0, close the ones still pending
 *               after TIMEOUT_MS (abandoned); none may connect
 *       reset   N times: connect, read until the peer's RST (ECONNRESET; or connect itself
 *               returns ECONNRESET when the RST came first), close
 *       hold    connect N, print "held", wait for a line (or EOF) on stdin, close them,
 *               shutting down writing first and reading to EOF
 * Prints "done" at the end; exits 1 on anything unexpected, and 3 when it is still running after
 * 120 s (a hung handshake or a missing RST must fail the test, not hang it).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_N 4096

/* What the process is doing, for the message of a hung run (read by the SIGALRM handler). */
static const char *volatile stage = "start";

static int die(const char *what) {
    perror(what);
    exit(1);
}

static void drain(int fd) {
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        ;
    if (n < 0)
        die("read");
}

static void wait_stdin(void) {
    char line[64];
    if (!fgets(line, sizeof line, stdin) && ferror(stdin))
        die("stdin");
}

static socklen_t address(const char *host, int port, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        return sizeof *v4;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        return sizeof *v6;
    }
    fprintf(stderr, "bad address %s\n", host);
    exit(1);
}

static int connect_to(struct sockaddr_storage *ss, socklen_t len) {
    int s = socket(ss->ss_family, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    if (connect(s, (struct sockaddr *)ss, len))
        die("connect");
    return s;
}

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

static int server(int port, int n, const char *mode, int v6) {
    int l = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    if (l < 0)
        die("socket");
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage ss;
    socklen_t len = address(v6 ? "::" : "0.0.0.0", port, &ss);
    if (bind(l, (struct sockaddr *)&ss, len))
        die("bind");
    if (listen(l, MAX_N))
        die("listen");
    printf("ready\n");
    fflush(stdout);
    static int held[MAX_N];
    stage = "server: accept";
    for (int i = 0; i < n; i++) {
        int c = accept(l, NULL, NULL);
        if (c < 0)
            die("accept");
        if (!strcmp(mode, "close")) {
            drain(c);
            close(c);
        } else if (!strcmp(mode, "reset")) {
            struct linger lg = {1, 0};
            if (setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg))
                die("SO_LINGER");
            close(c);
        } else if (!strcmp(mode, "hold")) {
            held[i] = c;
        } else {
            fprintf(stderr, "bad mode %s\n", mode);
            return 1;
        }
    }
    if (!strcmp(mode, "hold")) {
        printf("held\n");
        fflush(stdout);
        wait_stdin();
        for (int i = 0; i < n; i++)
            shutdown(held[i], SHUT_WR);
        for (int i = 0; i < n; i++) {
            drain(held[i]);
            close(held[i]);
        }
    }
    close(l);
    printf("done\n");
    return 0;
}

static int client(const char *host, int port, int n, const char *mode, int timeout_ms) {
    struct sockaddr_storage ss;
    socklen_t len = address(host, port, &ss);
    static int fds[MAX_N];
    if (!strcmp(mode, "close")) {
        for (int i = 0; i < n; i++) {
            int s = connect_to(&ss, len);
            if (shutdown(s, SHUT_WR))
                die("shutdown");
            drain(s);
            close(s);
        }
    } else if (!strcmp(mode, "refused")) {
        for (int i = 0; i < n; i++) {
            int s = socket(ss.ss_family, SOCK_STREAM, 0);
            if (connect(s, (struct sockaddr *)&ss, len) == 0 || errno != ECONNREFUSED)
                die("connect (expected ECONNREFUSED)");
            close(s);
        }
    } else if (!strcmp(mode, "timeout")) {
        for (int i = 0; i < n; i++) {
            fds[i] = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (connect(fds[i], (struct sockaddr *)&ss, len) == 0 || errno != EINPROGRESS)
                die("connect (expected EINPROGRESS)");
        }
        long long deadline = timeout_ms > 0 ? now_ms() + timeout_ms : -1;
        int pending = n, timed_out = 0, abandoned = 0;
        while (pending > 0) {
            struct pollfd p[MAX_N];
            int m = 0;
            for (int i = 0; i < n; i++)
                if (fds[i] >= 0)
                    p[m++] = (struct pollfd){.fd = fds[i], .events = POLLOUT};
            int wait = deadline < 0 ? 60000 : (int)(deadline - now_ms());
            if (wait < 0)
                wait = 0;
            int r = poll(p, m, wait);
            if (r < 0)
                die("poll");
            if (r == 0) {
                if (deadline < 0) {
                    fprintf(stderr, "connects still pending after 60 s\n");
                    return 1;
                }
                for (int i = 0; i < n; i++)
                    if (fds[i] >= 0) {
                        close(fds[i]);
                        fds[i] = -1;
                        abandoned++;
                        pending--;
                    }
                break;
            }
            for (int j = 0; j < m; j++) {
                if (!p[j].revents)
                    continue;
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(p[j].fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err == 0) {
                    fprintf(stderr, "a connect succeeded\n");
                    return 1;
                }
                if (err != ETIMEDOUT) {
                    fprintf(stderr, "connect failed with %s\n", strerror(err));
                    return 1;
                }
                timed_out++;
                close(p[j].fd);
                for (int i = 0; i < n; i++)
                    if (fds[i] == p[j].fd)
                        fds[i] = -1;
                pending--;
            }
        }
        printf("timed_out %d abandoned %d\n", timed_out, abandoned);
    } else if (!strcmp(mode, "reset")) {
        for (int i = 0; i < n; i++) {
            int s = socket(ss.ss_family, SOCK_STREAM, 0);
            if (s < 0)
                die("socket");
            /* The RST may arrive before connect() returns (seen under emulation): the
             * connection was established (a RST in SYN_SENT would be ECONNREFUSED) and reset,
             * and connect() reports ECONNRESET. */
            stage = "client reset: connect";
            if (connect(s, (struct sockaddr *)&ss, len) == 0) {
                char b;
                stage = "client reset: read, waiting for the peer's RST";
                if (read(s, &b, 1) >= 0 || errno != ECONNRESET)
                    die("read (expected ECONNRESET)");
            } else if (errno != ECONNRESET) {
                die("connect");
            }
            close(s);
        }
    } else if (!strcmp(mode, "hold")) {
        for (int i = 0; i < n; i++)
            fds[i] = connect_to(&ss, len);
        printf("held\n");
        fflush(stdout);
        wait_stdin();
        for (int i = 0; i < n; i++)
            shutdown(fds[i], SHUT_WR);
        for (int i = 0; i < n; i++) {
            drain(fds[i]);
            close(fds[i]);
        }
    } else {
        fprintf(stderr, "bad mode %s\n", mode);
        return 1;
    }
    printf("done\n");
    return 0;
}

static void stuck(int sig) {
    (void)sig;
    static const char what[] = "conn_mix: still running after 120 s, in ";
    ssize_t ignored = write(2, what, sizeof what - 1);
    ignored = write(2, stage, strlen(stage));
    ignored = write(2, "\n", 1);
    (void)ignored;
    _exit(3);
}

int main(int argc, char **argv) {
    signal(SIGALRM, stuck);
    alarm(120);
    if (argc >= 5 && !strcmp(argv[1], "server"))
        return server(atoi(argv[2]), atoi(argv[3]), argv[4], argc > 5 && !strcmp(argv[5], "6"));
    if (argc >= 6 && !strcmp(argv[1], "client"))
        return client(argv[2], atoi(argv[3]), atoi(argv[4]), argv[5],
                      argc > 6 ? atoi(argv[6]) : 0);
    fprintf(stderr, "usage: see the comment at the top\n");
    return 2;
}
