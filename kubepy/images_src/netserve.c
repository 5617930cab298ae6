/* kubepy test image: answer on TCP and UDP (and SCTP when the kernel has it) ports.
 * Usage: netserve PORT...   Every port is served on every protocol the
 * kernel supports. A TCP/SCTP connection gets "<hostname>\n" and is closed; a
 * UDP datagram is answered with "<hostname>\n". SIGTERM/SIGINT: exit 0.
 * Built static: gcc -static -O2 -o netserve netserve.c */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

static void on_term(int sig) { (void)sig; _exit(0); }

static int listener(int type, int proto, int port) {
    struct sockaddr_in addr = {0};
    int one = 1, fd = socket(AF_INET, type, proto);
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("netserve: bind"); exit(1); }
    if (type == SOCK_STREAM && listen(fd, 128) < 0) { perror("netserve: listen"); exit(1); }
    return fd;
}

int main(int argc, char **argv) {
    struct pollfd fds[64];
    int kinds[64], n = 0;
    char host[256] = "?", buf[2048];
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    gethostname(host, sizeof host - 2);
    strcat(host, "\n");
    for (int i = 1; i < argc && n < 60; i++) {
        int port = atoi(argv[i]), fd;
        fds[n].fd = listener(SOCK_STREAM, 0, port); fds[n].events = POLLIN; kinds[n++] = SOCK_STREAM;
        fds[n].fd = listener(SOCK_DGRAM, 0, port); fds[n].events = POLLIN; kinds[n++] = SOCK_DGRAM;
        if ((fd = listener(SOCK_STREAM, IPPROTO_SCTP, port)) >= 0) {
            fds[n].fd = fd; fds[n].events = POLLIN; kinds[n++] = SOCK_STREAM;
        }
    }
    printf("netserve: %d sockets\n", n);
    fflush(stdout);
    for (;;) {
        if (poll(fds, n, -1) < 0) continue;
        for (int i = 0; i < n; i++) {
            if (!(fds[i].revents & POLLIN)) continue;
            if (kinds[i] == SOCK_DGRAM) {
                struct sockaddr_in peer;
                socklen_t len = sizeof peer;
                if (recvfrom(fds[i].fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len) >= 0)
                    sendto(fds[i].fd, host, strlen(host), 0, (struct sockaddr *)&peer, len);
            } else {
                int c = accept(fds[i].fd, NULL, NULL);
                if (c >= 0) { (void)!write(c, host, strlen(host)); close(c); }
            }
        }
    }
}
