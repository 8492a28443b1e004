/* fuzz_rendezvous.c - libFuzzer target: the local rendezvous of shm and mq
 * (lib/rendezvous.c and the transports' hello validation), fed what a
 * hostile client sends: arbitrary hello bytes with arbitrary descriptors
 * (memfds sealed or not, of the size the hello claims or not, sockets,
 * pipes, queues, /dev/null), through the internal entry point
 * ipc__rdv_offer (a connected SEQPACKET socket, as accept4 returns it);
 * then an IPC_DONTWAIT accept, a receive and a close of what was built.
 * The client side is fed the listener's reply: arbitrary bytes, parsed by
 * ipc__rdv_peek_reply and ipc__rdv_status_errno, whose result must be one
 * of the documented codes.
 *
 * Input: byte 0 picks the transport (bit 0: mq), bit 1 sends nothing (a
 * silent peer), bit 2 closes the client before the listener looks; byte 1
 * the number of descriptors (mod 8); then one kind byte per descriptor;
 * then the reply length byte and that many reply bytes; the rest is the
 * hello. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ipc_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ipc_listener *lst[2];

static ipc_listener *listener(int mq)
{
	if (!lst[mq]) {
		char a[64];
		snprintf(a, sizeof a, mq ? "mq:/fuzz-rdv-%d" : "shm:fuzz-rdv-%d", (int)getpid());
		struct ipc_options o;
		ipc_options_init(&o);
		o.capacity = 64 << 10;
		o.max_msg_size = 1 << 20;
		o.recv_timeout_ms = 0;
		lst[mq] = ipc_listen(a, &o);
		if (!lst[mq])
			abort();
	}
	return lst[mq];
}

/* A descriptor of kind k; size: what the hello claims the memfd holds. */
static int make_fd(unsigned k, uint64_t size)
{
	int fd = -1, sv[2], p[2];
	switch (k % 9) {
	case 0: /* a memfd sealed as the library wants */
	case 1: /* unsealed */
	case 2: /* sealed against writing */
		fd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (fd < 0)
			abort();
		if (ftruncate(fd, (off_t)(size <= (8u << 20) ? size : 4096)) < 0)
			abort();
		if (k % 9 == 0)
			fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
		if (k % 9 == 2)
			fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
		return fd;
	case 3: /* a unix stream socket (a wake channel) */
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			abort();
		close(sv[1]);
		return sv[0];
	case 4: /* a pipe */
		if (pipe2(p, O_CLOEXEC) < 0)
			abort();
		close(p[0]);
		return p[1];
	case 5: /* POSIX queues, non-blocking or not */
	case 6: {
		char n[64];
		snprintf(n, sizeof n, "/fuzz-rdv-q-%d", (int)getpid());
		struct mq_attr a = {.mq_maxmsg = 2, .mq_msgsize = 64};
		fd = mq_open(n, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | (k % 9 == 5 ? O_NONBLOCK : 0), 0600, &a);
		mq_unlink(n);
		return fd >= 0 ? fd : open("/dev/null", O_RDWR | O_CLOEXEC);
	}
	case 7: /* a datagram socket */
		if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) < 0)
			abort();
		close(sv[1]);
		return sv[0];
	default:
		return open("/dev/null", O_RDWR | O_CLOEXEC);
	}
}

static void client_side(const uint8_t *reply, size_t n)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	if (n)
		send(sv[1], reply, n, MSG_NOSIGNAL);
	else
		close(sv[1]);
	unsigned char buf[16];
	for (size_t len = 1; len <= 16; len += 15) {
		if (ipc__rdv_peek_reply(sv[0], buf, len, IPC__NOW) == 0) {
			if (len != n)
				abort(); /* only a reply of the exact size is taken */
			int e = ipc__rdv_status_errno(buf[len == 1 ? 0 : 5]);
			if (e != 0 && e != EACCES && e != EPROTO && e != EMSGSIZE && e != ECONNREFUSED)
				abort();
		}
	}
	close(sv[0]);
	if (n)
		close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	unsigned mode = data[0], nfds = data[1] % 8;
	data += 2;
	size -= 2;
	if (size < nfds + 1)
		return 0;
	const uint8_t *kinds = data;
	data += nfds;
	size -= nfds;
	size_t rlen = data[0] % 17;
	data++;
	size--;
	if (size < rlen)
		rlen = size;
	client_side(data, rlen);
	data += rlen;
	size -= rlen;
	if (size > IPC__RDV_MAX_HELLO + 16)
		size = IPC__RDV_MAX_HELLO + 16;

	int mq = mode & 1;
	ipc_listener *l = listener(mq);
	uint64_t claimed = 4096;
	if (size >= 48)
		memcpy(&claimed, data + 40, sizeof claimed); /* the shm hello's region */
	int fds[8], sv[2];
	for (unsigned i = 0; i < nfds; i++)
		fds[i] = make_fd(kinds[i], claimed);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	if (!(mode & 2)) {
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int) * 8)];
		} u;
		memset(&u, 0, sizeof u);
		struct iovec iov = {.iov_base = (void *)data, .iov_len = size};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
		if (nfds) {
			m.msg_control = u.b;
			m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
			struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
			memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
		}
		sendmsg(sv[1], &m, MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	if (mode & 4)
		close(sv[1]);
	ipc__rdv_offer((struct ipc__rdv_listener *)l, sv[0]);
	ipc_conn *c;
	while ((c = ipc_accept(l, IPC_DONTWAIT)) != NULL) {
		char b[64];
		ipc_recv(c, b, sizeof b, IPC_DONTWAIT);
		ipc_close(c);
	}
	if (!(mode & 4)) {
		unsigned char r[32];
		recv(sv[1], r, sizeof r, MSG_DONTWAIT);
		close(sv[1]);
	}
	return 0;
}
