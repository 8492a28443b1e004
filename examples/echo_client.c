/*
 * echo_client.c - send messages to an echo server and check the replies.
 *
 *   echo_client ADDR [MSG...]   send each MSG (default "hello") to the
 *                               echo server at ADDR, print each reply
 *   echo_client                 self-test: fork an echo server on a unique
 *                               unix abstract address and talk to it
 *
 * The same binary works over unix, tcp, shm and mq: only ADDR changes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ipc.h>

/* The self-test server: echo one connection, in a child process. */
static pid_t fork_server(ipc_listener *l)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	ipc_conn *c = ipc_accept(l, 0);
	char buf[4096];
	ssize_t n;
	while (c && (n = ipc_recv(c, buf, sizeof buf, 0)) >= 0)
		ipc_send(c, buf, (size_t)n, 0);
	_exit(0);
}

int main(int argc, char **argv)
{
	char self[64], bound[IPC_ADDR_MAX + 1];
	const char *addr = argc > 1 ? argv[1] : NULL;
	pid_t pid = -1;
	if (!addr) {
		/* The listener is created before fork() and then only used by
		 * the child: after fork() one process per handle (see ipc(7)). */
		snprintf(self, sizeof self, "unix:@echo-client-%d", (int)getpid());
		static ipc_listener *l; /* the child's: never closed here */
		l = ipc_listen(self, NULL);
		if (!l || ipc_listener_addr(l, bound, sizeof bound) < 0) {
			perror("echo_client: listen");
			return 2;
		}
		pid = fork_server(l);
		addr = bound;
	}

	ipc_conn *c = ipc_connect(addr, NULL);
	if (!c) {
		fprintf(stderr, "echo_client: connect %s: %s\n", addr, strerror(errno));
		return 2;
	}
	static char *defaults[] = {"hello", "", "world"};
	char **msgs = argc > 2 ? argv + 2 : defaults;
	int nmsgs = argc > 2 ? argc - 2 : 3;
	int bad = 0;
	for (int i = 0; i < nmsgs; i++) {
		size_t len = strlen(msgs[i]);
		void *reply;
		if (ipc_send(c, msgs[i], len, 0) < 0) {
			perror("echo_client: send");
			bad = 1;
			break;
		}
		ssize_t n = ipc_recv_alloc(c, &reply, 0);
		if (n < 0) {
			perror("echo_client: recv");
			bad = 1;
			break;
		}
		printf("%.*s\n", (int)n, (char *)reply);
		bad |= (size_t)n != len || memcmp(reply, msgs[i], len);
		free(reply);
	}
	ipc_close(c); /* the server sees EPIPE and ends */
	if (pid > 0) {
		int st;
		waitpid(pid, &st, 0);
		bad |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
	}
	return bad;
}
