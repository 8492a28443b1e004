/* fuzz_stream.c - libFuzzer target: the stream frame decoder and handshake
 * (unix/tcp wire format), fed arbitrary bytes as if from a peer.  One end
 * of a socketpair is wrapped as a libipc connection (max_msg_size 1 MiB);
 * the input is written into the other end, which is then shut down, and we
 * receive until an error.  The first input byte picks the variant: bit 0
 * prepends a valid hello (so frames get exercised), bit 1 receives with
 * ipc_recv_alloc instead of a fixed buffer, bit 2 uses a 100-byte buffer
 * (EMSGSIZE path), bit 3 asks ipc_conn_ready first. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc_impl.h"

extern const struct ipc__transport ipc__unix_transport;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put_all(int fd, const void *p, size_t n)
{
	const char *b = p;
	while (n) {
		ssize_t r = send(fd, b, n, MSG_NOSIGNAL);
		if (r <= 0)
			abort();
		b += r;
		n -= (size_t)r;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	unsigned mode = data[0];
	data++;
	size--;
	if (size > 150000)
		size = 150000; /* stays under the socket buffer */
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	int bufsz = 1 << 20;
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);
	struct ipc_options o;
	ipc_options_init(&o);
	o.max_msg_size = 1 << 20;
	struct ipc_conn *c = ipc__sock_conn_new(sv[0], &o, 1);
	if (!c)
		abort();
	c->tp = &ipc__unix_transport;
	c->opt = o;
	if (mode & 1) {
		unsigned char h[IPC__HELLO_LEN];
		ipc__hello_encode(h, IPC__HELLO_OK);
		put_all(sv[1], h, sizeof h);
	}
	put_all(sv[1], data, size);
	shutdown(sv[1], SHUT_WR);

	static unsigned char buf[1 << 20];
	size_t cap = (mode & 4) ? 100 : sizeof buf;
	for (int i = 0; i < 100000; i++) {
		if (mode & 8) {
			short pev;
			int r = ipc_conn_ready(c, IPC_POLLIN | IPC_POLLOUT, &pev);
			if (r < 0)
				abort();
			if (!(r & IPC_POLLIN))
				abort(); /* everything is there: it must say so */
		}
		ssize_t r;
		if (mode & 2) {
			void *m = NULL;
			r = ipc_recv_alloc(c, &m, IPC_DONTWAIT);
			if (r >= 0) {
				if (!m || (size_t)r > o.max_msg_size)
					abort();
				free(m);
			} else if (m) {
				abort();
			}
		} else {
			r = ipc_recv(c, buf, cap, IPC_DONTWAIT);
			if (r < 0 && errno == EMSGSIZE)
				r = ipc_recv(c, buf, sizeof buf, IPC_DONTWAIT);
			if (r >= 0 && (size_t)r > o.max_msg_size)
				abort();
		}
		if (r < 0) {
			/* the input is all there: end, reset, protocol error or refusal */
			if (errno != EPIPE && errno != ECONNRESET && errno != EPROTO && errno != EACCES)
				abort();
			break;
		}
	}
	ipc_close(c);
	close(sv[1]);
	return 0;
}
