/* fuzz_listener.c - libFuzzer target: a unix stream listener under many
 * concurrent half-open peers.  The input is a script run against one
 * listener (unix:@abstract, a fresh name per run): each 2-byte step picks
 * one of 16 raw client slots and an action: connect, write the next bytes
 * of the input (a valid hello, part of one, or garbage), half-close,
 * close, or let the server side run (listener_ready, accept, a receive on
 * what was accepted).  Checked: accept returns a connection only for a
 * peer whose first 8 bytes arrived; a receive ends only with a message or
 * a clean error; after everything is closed, the descriptors are back. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ipc_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SLOTS 16

static int fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	if (!d)
		abort();
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

struct slot {
	int fd;      /* raw client, or -1 */
	size_t sent; /* bytes written so far */
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned run;
	char addr[64];
	int fd0 = fd_count();
	snprintf(addr, sizeof addr, "unix:@libipc-fuzz-listener-%d-%u", (int)getpid(), run++);
	struct ipc_options o;
	ipc_options_init(&o);
	o.max_msg_size = 1 << 16;
	o.mode = 0666;
	ipc_listener *l = ipc_listen(addr, &o);
	if (!l)
		abort();
	struct sockaddr_un su = {.sun_family = AF_UNIX};
	size_t nlen = strlen(addr + 6);
	memcpy(su.sun_path + 1, addr + 6, nlen);
	socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + nlen);
	struct slot sl[SLOTS];
	for (int i = 0; i < SLOTS; i++)
		sl[i] = (struct slot){-1, 0};
	ipc_conn *acc[64];
	int nacc = 0;
	unsigned char hello[IPC__HELLO_LEN];
	ipc__hello_encode(hello, IPC__HELLO_OK);

	for (size_t pos = 0; pos + 1 < size && pos < 4096; pos += 2) {
		struct slot *s = &sl[data[pos] % SLOTS];
		unsigned arg = data[pos + 1];
		switch (data[pos] / SLOTS % 6) {
		case 0: /* connect */
			if (s->fd < 0) {
				s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
				if (s->fd >= 0 && connect(s->fd, (struct sockaddr *)&su, salen) < 0) {
					close(s->fd);
					s->fd = -1;
				}
				s->sent = 0;
			}
			break;
		case 1: /* part of a valid hello, then input bytes as frames */
			if (s->fd >= 0) {
				size_t n = arg % 9;
				if (s->sent < sizeof hello) {
					if (n > sizeof hello - s->sent)
						n = sizeof hello - s->sent;
					if (send(s->fd, hello + s->sent, n, MSG_NOSIGNAL | MSG_DONTWAIT) > 0)
						s->sent += n;
				} else if (pos + 2 + n <= size &&
					   send(s->fd, data + pos + 2, n, MSG_NOSIGNAL | MSG_DONTWAIT) > 0) {
					s->sent += n;
				}
			}
			break;
		case 2: /* garbage */
			if (s->fd >= 0) {
				unsigned char g[4] = {(unsigned char)arg, (unsigned char)(arg * 7), 0xff, 0};
				if (send(s->fd, g, 1 + arg % 4, MSG_NOSIGNAL | MSG_DONTWAIT) > 0)
					s->sent += 1 + arg % 4;
			}
			break;
		case 3: /* half-close or close */
			if (s->fd >= 0) {
				if (arg & 1) {
					shutdown(s->fd, SHUT_WR);
				} else {
					close(s->fd);
					s->fd = -1;
				}
			}
			break;
		case 4: { /* the server runs: readiness, then accept */
			short pev;
			int r = ipc_listener_ready(l, IPC_POLLIN, &pev);
			if (r < 0 || (!r && pev != POLLIN))
				abort();
			ipc_conn *c = ipc_accept(l, IPC_DONTWAIT);
			if (!c && errno != EAGAIN && errno != EMFILE && errno != ENFILE)
				abort();
			if (c) {
				/* nothing read yet: the peer's whole hello is there */
				unsigned char h[IPC__HELLO_LEN];
				if (recv(ipc_conn_fd(c), h, sizeof h, MSG_PEEK | MSG_DONTWAIT) != (ssize_t)sizeof h)
					abort();
				if (nacc == 64)
					ipc_close(c);
				else
					acc[nacc++] = c;
			}
			break;
		}
		default: /* a receive on an accepted connection */
			if (nacc) {
				ipc_conn *c = acc[arg % nacc];
				char buf[256];
				ssize_t r = ipc_recv(c, buf, sizeof buf, IPC_DONTWAIT);
				if (r < 0 && errno != EAGAIN && errno != EPIPE && errno != ECONNRESET &&
				    errno != EPROTO && errno != EMSGSIZE)
					abort();
			}
			break;
		}
	}
	for (int i = 0; i < SLOTS; i++)
		if (sl[i].fd >= 0)
			close(sl[i].fd);
	for (int i = 0; i < nacc; i++)
		ipc_close(acc[i]);
	ipc_listener_close(l);
	if (fd_count() != fd0)
		abort();
	return 0;
}
