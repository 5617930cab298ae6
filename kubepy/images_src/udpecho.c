/* kubepy test image: a UDP echo server.
 * Listens on 0.0.0.0:PORT (argv[1], default 9000); answers each datagram
 * with "<hostname> <payload>" to its sender. SIGTERM/SIGINT: exit 0.
 * Built static: gcc -static -O2 -o udpecho udpecho.c */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 9000;
    char host[256] = "?", buf[2048], out[2400];
    struct sockaddr_in addr = {0}, peer;
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    gethostname(host, sizeof host - 1);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("udpecho: bind");
        return 1;
    }
    printf("udpecho: %s listening on udp 0.0.0.0:%d\n", host, port);
    fflush(stdout);
    for (;;) {
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &plen);
        if (n < 0)
            continue;
        int m = snprintf(out, sizeof out, "%s %.*s", host, (int)n, buf);
        if (m > (int)sizeof out - 1)
            m = sizeof out - 1;
        sendto(fd, out, (size_t)m, 0, (struct sockaddr *)&peer, plen);
    }
}
