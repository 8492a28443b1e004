/* app-0.1.c - a program written and built against libipc 0.1's header
 * (tests/abi/0.1/ipc.h, include/ipc.h of release 0.1), run unchanged
 * against the new library by test_abi.c.  It leans on what 0.2 changed:
 * the size of struct ipc_options and the values of the IPC_POLL* bits.
 * usage: app-0.1 ADDR ; exit 0 when every step behaved as 0.1 documents. */
#include <errno.h>
#include <ipc.h>
#include <stdio.h>
#include <string.h>

#define FAIL(what) do { fprintf(stderr, "app-0.1: %s failed\n", what); return 1; } while (0)

int main(int argc, char **argv)
{
	/* a guard on each side: 0.2's larger struct must never be written here */
	struct { struct ipc_options o; unsigned char guard[256]; } s;
	char bound[IPC_ADDR_MAX + 1], buf[64];
	short pev;
	if (argc != 2)
		return 2;
	memset(s.guard, 0xa5, sizeof s.guard);
	ipc_options_init(&s.o);
	for (size_t i = 0; i < sizeof s.guard; i++)
		if (s.guard[i] != 0xa5)
			FAIL("ipc_options_init wrote past the 0.1 struct:");
	if (s.o.capacity != 1 << 20 || s.o.mode != 0600 || s.o.max_msg_size != (size_t)64 << 20)
		FAIL("ipc_options_init defaults");
	s.o.recv_timeout_ms = 5000;
	s.o.capacity = 65536;
	ipc_listener *l = ipc_listen(argv[1], &s.o);
	if (!l || ipc_listener_addr(l, bound, sizeof bound) < 0)
		FAIL("ipc_listen");
	ipc_conn *c = ipc_connect(bound, &s.o);
	if (!c)
		FAIL("ipc_connect");
	struct ipc_pollitem li = {.listener = l, .events = IPC_POLLIN};
	if (ipc_poll(&li, 1, 5000) != 1 || li.revents != IPC_POLLIN || li.events != IPC_POLLIN)
		FAIL("ipc_poll on the listener");
	if (ipc_listener_ready(l, IPC_POLLIN, &pev) != IPC_POLLIN)
		FAIL("ipc_listener_ready");
	ipc_conn *a = ipc_accept(l, 0);
	if (!a)
		FAIL("ipc_accept");
	/* 0.1's IPC_POLLOUT is 0x2: the library must understand it and answer in kind */
	if (ipc_conn_ready(c, IPC_POLLOUT, &pev) != IPC_POLLOUT)
		FAIL("ipc_conn_ready(IPC_POLLOUT)");
	struct ipc_pollitem it[2] = {{.conn = c, .events = IPC_POLLOUT}, {.conn = a, .events = IPC_POLLIN}};
	if (ipc_poll(it, 2, 5000) != 1 || it[0].revents != IPC_POLLOUT || it[1].revents != 0)
		FAIL("ipc_poll(IPC_POLLOUT)");
	/* a bit 0.1 did not know is refused, and the caller's bits stay */
	struct ipc_pollitem bad = {.conn = c, .events = 0x10};
	if (ipc_poll(&bad, 1, 0) != -1 || errno != EINVAL || bad.events != 0x10)
		FAIL("ipc_poll with an unknown bit");
	if (ipc_send(c, "old", 3, 0) != 3)
		FAIL("ipc_send");
	if (ipc_poll(&it[1], 1, 5000) != 1 || it[1].revents != IPC_POLLIN)
		FAIL("ipc_poll(IPC_POLLIN)");
	if (ipc_recv(a, buf, sizeof buf, 0) != 3 || memcmp(buf, "old", 3))
		FAIL("ipc_recv");
	ipc_close(c);
	/* the peer closed in order: POLLIN with 0.1's HUP bit (0x8) at most */
	if (ipc_poll(&it[1], 1, 5000) != 1 || (it[1].revents & ~(IPC_POLLIN | IPC_POLLHUP)) || !(it[1].revents & IPC_POLLIN))
		FAIL("ipc_poll after close");
	ipc_close(a);
	ipc_listener_close(l);
	return 0;
}
