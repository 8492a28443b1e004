/* tls_util.c - tls: helpers for tests that need a raw peer inside TLS.
 *
 * t_tls_raw_connect() gives a test the same raw byte stream it has on
 * tcp:, but carried inside a TLS connection: a child process holds the
 * TLS client and relays bytes both ways between it and a socket pair, so
 * the hostile tests write their bytes (bad magic, huge lengths, a byte at a
 * time ...) to the library's framing layer through TLS unchanged. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test.h"

#ifdef IPC_HAVE_TLS
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/* The TCP part of a tls:a.b.c.d:port address. */
static int tcp_to(const char *bound)
{
	char host[64];
	const char *colon = strrchr(bound, ':');
	if (!colon || (size_t)(colon - bound - 4) >= sizeof host)
		return -1;
	memcpy(host, bound + 4, (size_t)(colon - bound - 4));
	host[colon - bound - 4] = '\0';
	struct sockaddr_in si = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
	if (inet_pton(AF_INET, host, &si.sin_addr) != 1)
		return -1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&si, sizeof si) < 0)
		return -1;
	return fd;
}

/* The relay: TLS client on tcp, plaintext on sp, until either ends. */
static void relay(int sp, int tcp)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = ctx ? SSL_new(ctx) : NULL;
	if (!ssl || !SSL_set_fd(ssl, tcp) || SSL_connect(ssl) != 1)
		_exit(3);
	char buf[16384];
	int sp_open = 1;
	for (;;) {
		struct pollfd p[2] = {{.fd = sp_open ? sp : -1, .events = POLLIN}, {.fd = tcp, .events = POLLIN}};
		if (!SSL_pending(ssl) && poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents) {
			ssize_t n = read(sp, buf, sizeof buf);
			if (n <= 0) { /* the test closed: an orderly TLS end */
				SSL_shutdown(ssl);
				shutdown(tcp, SHUT_WR);
				sp_open = 0;
			} else if (SSL_write(ssl, buf, (int)n) <= 0) {
				break;
			}
		}
		if (SSL_pending(ssl) || p[1].revents) {
			int n = SSL_read(ssl, buf, sizeof buf);
			if (n <= 0)
				break;
			if (sp_open && write(sp, buf, (size_t)n) < 0) { /* the test closed */
				SSL_shutdown(ssl);
				shutdown(tcp, SHUT_WR);
				sp_open = 0;
			}
		}
	}
	_exit(0);
}

int t_tls_raw_connect(const char *bound)
{
	int sp[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	int tcp = tcp_to(bound);
	CHECKF(tcp >= 0, "tcp connect to %s", bound);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		signal(SIGPIPE, SIG_IGN);
		for (int fd = 3; fd < 4096; fd++) /* hold nothing of the test's */
			if (fd != sp[1] && fd != tcp)
				close(fd);
		relay(sp[1], tcp);
	}
	close(sp[1]);
	close(tcp);
	return sp[0]; /* the child is reaped by the runner's process group kill */
}
#else
int t_tls_raw_connect(const char *bound)
{
	CHECKF(0, "no tls in this build: %s", bound);
	return -1;
}
#endif
