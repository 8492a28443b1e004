/* fuzz_shm_ring.c - libFuzzer target: the shm ring reader (and writer) given
 * arbitrary ring contents, as a hostile peer sharing the mapping could
 * write them.  Each input gets a fresh shm connection pair; we then act as
 * the peer through the test hook ipc__shm_test_ptr (lib/shm.c): write the
 * input into the receiver's ring and publish an arbitrary head (mode 0),
 * move the sender's tail arbitrarily and send (mode 1), or scribble on the
 * peer state word (mode 2).  The library must end with a clean error or
 * valid messages: no crash, no read/write outside its buffers, no
 * allocation beyond max_msg_size. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc_impl.h"

void *ipc__shm_test_ptr(ipc_conn *cc, int what, size_t *ringsize);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ipc_listener *lst;
static char bound[IPC_ADDR_MAX + 1];

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ipc_options o;
	ipc_options_init(&o);
	o.max_msg_size = 1 << 20;
	o.capacity = 4096 * 4;
	o.connect_timeout_ms = 5000;
	if (!lst) {
		char name[64];
		snprintf(name, sizeof name, "shm:fuzz-%d", (int)getpid());
		lst = ipc_listen(name, &o);
		if (!lst || ipc_listener_addr(lst, bound, sizeof bound) < 0)
			abort();
	}
	if (size < 9)
		return 0;
	unsigned mode = data[0] % 3;
	uint64_t idx = get64(data + 1);
	data += 9;
	size -= 9;
	ipc_conn *cli = ipc_connect(bound, &o);
	if (!cli)
		abort();
	ipc_conn *srv = ipc_accept(lst, 0);
	if (!srv)
		abort();
	size_t rs = 0;
	if (mode == 0) { /* hostile producer: ring bytes + head */
		_Atomic uint64_t *head = ipc__shm_test_ptr(srv, 0, &rs);
		unsigned char *ring = ipc__shm_test_ptr(srv, 2, &rs);
		if (!head || !ring || !rs)
			abort();
		memcpy(ring, data, size < rs ? size : rs);
		atomic_store(head, (idx & 1) ? idx : idx % (rs * 2 + 1));
		static unsigned char buf[1 << 20];
		for (int i = 0; i < 1000; i++) {
			ssize_t r = (i & 1) ? ipc_recv(srv, buf, sizeof buf, IPC_DONTWAIT) : -2;
			if (r == -2) {
				void *m = NULL;
				r = ipc_recv_alloc(srv, &m, IPC_DONTWAIT);
				free(m);
			}
			if (r < 0)
				break;
			if ((size_t)r > o.max_msg_size)
				abort();
		}
	} else if (mode == 1) { /* hostile consumer: tail moved anywhere */
		_Atomic uint64_t *tail = ipc__shm_test_ptr(srv, 4, &rs);
		if (!tail)
			abort();
		atomic_store(tail, idx);
		static unsigned char msg[3000];
		memset(msg, 'm', sizeof msg);
		for (size_t i = 0; i < 20; i++)
			if (ipc_send(srv, msg, (size + i * 97) % sizeof msg, IPC_DONTWAIT) < 0 && errno != EAGAIN)
				break;
	} else { /* garbage in the peer's state word */
		_Atomic uint32_t *st = ipc__shm_test_ptr(srv, 7, &rs);
		if (!st)
			abort();
		atomic_store(st, (uint32_t)idx);
		char b[64];
		ipc_recv(srv, b, sizeof b, IPC_DONTWAIT);
		ipc_send(srv, "x", 1, IPC_DONTWAIT);
	}
	/* the close of either side must not hang or crash either */
	ipc_conn_set_timeouts(srv, 0, 0);
	srv->opt.linger_ms = 0;
	cli->opt.linger_ms = 0;
	ipc_close(srv);
	ipc_close(cli);
	return 0;
}
