/* compat.c - the 0.1 ABI, for programs built against libipc 0.1.
 *
 * 0.2 changed two things a built program sees: struct ipc_options grew (so
 * ipc_options_init, ipc_listen and ipc_connect read a larger struct) and
 * the IPC_POLL* bits took poll(2)'s values.  The shared library keeps the
 * 0.1 behaviour under the symbol version IPC_0.1, which the dynamic linker
 * binds to every program built against 0.1 (their references carry no
 * version, and an unversioned reference binds to the oldest version); the
 * functions of 0.2 are the default, IPC_0.2.  See "ABI" in ipc(7) and
 * lib/libipc.map.  A static link always gets the 0.2 functions. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include "ipc_impl.h"

#define V01_API __attribute__((visibility("default"), used))
#define V01(fn) ipc__v01_##fn
#define V01_SYMVER(fn) __asm__(".symver ipc__v01_" #fn ", " #fn "@IPC_0.1");

/* struct ipc_options as 0.1 laid it out. */
struct ipc__options_v01 {
	int connect_timeout_ms;
	int send_timeout_ms;
	int recv_timeout_ms;
	int linger_ms;
	int nonblock;
	size_t max_msg_size;
	size_t capacity;
	unsigned mode;
};

/* 0.1's readiness bits. */
enum { V01_IN = 0x1, V01_OUT = 0x2, V01_ERR = 0x4, V01_HUP = 0x8 };

static int bits_from_v01(int b)
{
	return (b & V01_IN ? IPC_POLLIN : 0) | (b & V01_OUT ? IPC_POLLOUT : 0) |
	       (b & V01_ERR ? IPC_POLLERR : 0) | (b & V01_HUP ? IPC_POLLHUP : 0) |
	       (b & ~(V01_IN | V01_OUT | V01_ERR | V01_HUP) ? 0x40000000 : 0); /* keep bad bits bad */
}

static int bits_to_v01(int b)
{
	if (b < 0)
		return b;
	return (b & IPC_POLLIN ? V01_IN : 0) | (b & IPC_POLLOUT ? V01_OUT : 0) |
	       (b & IPC_POLLERR ? V01_ERR : 0) | (b & IPC_POLLHUP ? V01_HUP : 0);
}

static const struct ipc_options *opts_from_v01(const struct ipc__options_v01 *in, struct ipc_options *out)
{
	if (!in)
		return NULL;
	ipc_options_init(out);
	out->connect_timeout_ms = in->connect_timeout_ms;
	out->send_timeout_ms = in->send_timeout_ms;
	out->recv_timeout_ms = in->recv_timeout_ms;
	out->linger_ms = in->linger_ms;
	out->nonblock = in->nonblock;
	out->max_msg_size = in->max_msg_size;
	out->capacity = in->capacity;
	out->mode = in->mode;
	return out;
}

void V01(ipc_options_init)(struct ipc__options_v01 *o);
V01_API void V01(ipc_options_init)(struct ipc__options_v01 *o)
{
	struct ipc_options n;
	if (!o)
		return;
	ipc_options_init(&n);
	o->connect_timeout_ms = n.connect_timeout_ms;
	o->send_timeout_ms = n.send_timeout_ms;
	o->recv_timeout_ms = n.recv_timeout_ms;
	o->linger_ms = n.linger_ms;
	o->nonblock = n.nonblock;
	o->max_msg_size = n.max_msg_size;
	o->capacity = n.capacity;
	o->mode = n.mode;
}
V01_SYMVER(ipc_options_init)

ipc_listener *V01(ipc_listen)(const char *addr, const struct ipc__options_v01 *opts);
V01_API ipc_listener *V01(ipc_listen)(const char *addr, const struct ipc__options_v01 *opts)
{
	struct ipc_options o;
	return ipc_listen(addr, opts_from_v01(opts, &o));
}
V01_SYMVER(ipc_listen)

ipc_conn *V01(ipc_connect)(const char *addr, const struct ipc__options_v01 *opts);
V01_API ipc_conn *V01(ipc_connect)(const char *addr, const struct ipc__options_v01 *opts)
{
	struct ipc_options o;
	return ipc_connect(addr, opts_from_v01(opts, &o));
}
V01_SYMVER(ipc_connect)

int V01(ipc_conn_ready)(ipc_conn *c, int events, short *pollevents);
V01_API int V01(ipc_conn_ready)(ipc_conn *c, int events, short *pollevents)
{
	return bits_to_v01(ipc_conn_ready(c, bits_from_v01(events), pollevents));
}
V01_SYMVER(ipc_conn_ready)

int V01(ipc_listener_ready)(ipc_listener *l, int events, short *pollevents);
V01_API int V01(ipc_listener_ready)(ipc_listener *l, int events, short *pollevents)
{
	return bits_to_v01(ipc_listener_ready(l, bits_from_v01(events), pollevents));
}
V01_SYMVER(ipc_listener_ready)

int V01(ipc_poll)(struct ipc_pollitem *items, size_t n, int timeout_ms);
V01_API int V01(ipc_poll)(struct ipc_pollitem *items, size_t n, int timeout_ms)
{
	if (n && !items) {
		errno = EINVAL;
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if (items[i].events & ~(V01_IN | V01_OUT)) { /* as 0.1 refused them */
			errno = EINVAL;
			return -1;
		}
	short saved[16];
	short *ev = n <= 16 ? saved : malloc(n * sizeof *ev);
	if (!ev)
		return -1;
	for (size_t i = 0; i < n; i++) {
		ev[i] = items[i].events;
		items[i].events = (short)bits_from_v01(items[i].events);
	}
	int r = ipc_poll(items, n, timeout_ms);
	int e = errno;
	for (size_t i = 0; i < n; i++) {
		items[i].events = ev[i]; /* the caller's own bits, untouched */
		items[i].revents = (short)bits_to_v01(items[i].revents);
	}
	if (ev != saved)
		free(ev);
	errno = e;
	return r;
}
V01_SYMVER(ipc_poll)
