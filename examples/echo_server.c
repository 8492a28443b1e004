/*
 * echo_server.c - serve clients one after another, echoing every message.
 *
 *   echo_server ADDR [N]   listen on ADDR (any scheme), serve N clients
 *                          (default: forever), print the bound address
 *   echo_server            self-test: listen on a unique unix abstract
 *                          address, fork one client, serve it, exit 0
 *
 * The same binary works over unix, tcp, shm and mq: only ADDR changes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ipc.h>

/* Echo one connection until the client closes.  0 on a clean end. */
static int serve(ipc_conn *c)
{
	for (;;) {
		void *msg;
		ssize_t n = ipc_recv_alloc(c, &msg, 0); /* any size, malloc()ed */
		if (n < 0)
			return errno == EPIPE ? 0 : -1; /* EPIPE: orderly end */
		ssize_t s = ipc_send(c, msg, (size_t)n, 0);
		free(msg);
		if (s < 0)
			return -1;
	}
}

/* The self-test client: one message there and back. */
static int client(const char *addr)
{
	ipc_conn *c = ipc_connect(addr, NULL);
	char buf[64];
	if (!c || ipc_send(c, "hello", 5, 0) != 5 || ipc_recv(c, buf, sizeof buf, 0) != 5 ||
	    memcmp(buf, "hello", 5))
		return 1;
	return ipc_close(c) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	char self[64];
	const char *addr = argc > 1 ? argv[1] : NULL;
	long clients = argc > 2 ? atol(argv[2]) : -1;
	if (!addr) {
		snprintf(self, sizeof self, "unix:@echo-server-%d", (int)getpid());
		addr = self;
		clients = 1;
	}
	ipc_listener *l = ipc_listen(addr, NULL);
	if (!l) {
		fprintf(stderr, "echo_server: listen %s: %s\n", addr, strerror(errno));
		return 2;
	}
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener_addr(l, bound, sizeof bound);
	printf("listening on %s\n", bound);
	fflush(stdout);

	pid_t pid = -1;
	if (addr == self && (pid = fork()) == 0)
		_exit(client(bound)); /* the child only uses what it made itself */

	int bad = 0;
	for (long i = 0; clients < 0 || i < clients; i++) {
		ipc_conn *c = ipc_accept(l, 0);
		if (!c) {
			fprintf(stderr, "echo_server: accept: %s\n", strerror(errno));
			bad = 1;
			break;
		}
		if (serve(c) < 0) {
			fprintf(stderr, "echo_server: connection: %s\n", strerror(errno));
			bad = 1;
		}
		ipc_close(c);
	}
	ipc_listener_close(l);
	if (pid > 0) {
		int st;
		waitpid(pid, &st, 0);
		bad |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
	}
	return bad;
}
