/* test_mq.c - mq:/name specific tests: no leftovers in the mq namespace
 * (after close and after SIGKILL of either side), dead peer bound, 64 MiB,
 * kernel limits, queue exhaustion, credentials and access control; and
 * the server side (issue 11): fifty clients of one uid, messages of a client
 * that closed before accept, a forked child with held data, non-blocking
 * sends of any size, both sides closing with data held. */
#define _GNU_SOURCE
#include <errno.h>
#include <mqueue.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define MQDIR "/dev/mqueue"
#define DEAD_BOUND_MS 1000 /* a blocked call watches the socket: at once; generous for CI */


/* Entries of /dev/mqueue made by this library (other users may work in
 * parallel on this machine: only count ours). */
static int our_queues(void)
{
	int n = 0;
	FILE *f = popen("ls " MQDIR " 2>/dev/null | grep -c '^libipc-mq\\.'", "r");
	if (f) {
		if (fscanf(f, "%d", &n) != 1)
			n = 0;
		pclose(f);
	}
	return n;
}

TEST(mq_names_validated)
{
	CHECK_FAILS(ipc_listen("mq:noslash", NULL), EINVAL);
	CHECK_FAILS(ipc_listen("mq:/", NULL), EINVAL);
	CHECK_FAILS(ipc_listen("mq:/a/b", NULL), EINVAL);
	char name[300] = "mq:/";
	memset(name + 4, 'x', 256);
	name[260] = '\0';
	CHECK_FAILS(ipc_listen(name, NULL), ENAMETOOLONG);
	CHECK_FAILS(ipc_connect(name, NULL), ENAMETOOLONG);
	/* 255 characters: valid, hashed into the rendezvous address */
	name[259] = '\0';
	ipc_listener *l = ipc_listen(name, NULL);
	CHECK(l != NULL);
	char back[IPC_ADDR_MAX + 1];
	CHECK(ipc_listener_addr(l, back, sizeof back) == 259 && !strcmp(back, name));
	ipc_conn *c = ipc_connect(name, NULL);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	CHECK(ipc_send(c, "hi", 2, 0) == 2);
	char b[4];
	CHECK(ipc_recv(s, b, sizeof b, 0) == 2);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

struct big_send {
	ipc_conn *c;
	ssize_t r;
};

static void *big_send_fn(void *arg)
{
	struct big_send *b = arg;
	static char big[100000];
	t_fill(big, sizeof big, 1);
	/* more than the kernel queue holds: a blocking send waits for the
	 * reader (it holds nothing in user space) */
	b->r = ipc_send(b->c, big, sizeof big, 0);
	return NULL;
}

TEST(mq_no_leftovers_after_close)
{
	t_need_mqdir();
	int before = our_queues();
	ipc_conn *s, *c;
	t_pair("mq", NULL, &s, &c);
	CHECK(our_queues() == before); /* names never outlive connect */
	struct big_send b = {c, -1};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, big_send_fn, &b) == 0);
	void *p;
	CHECK(ipc_recv_alloc(s, &p, 0) == 100000 && t_verify(p, 100000, 1));
	free(p);
	CHECK(pthread_join(th, NULL) == 0);
	CHECK(b.r == 100000);
	CHECK(ipc_close(c) == 0);
	CHECK(ipc_close(s) == 0);
	CHECK(our_queues() == before);
}

/* One side in a child that gets SIGKILLed mid-transfer; the other side
 * must see the death within the bound and nothing may be left. */
static void kill_mid_transfer(int kill_client)
{
	TEST_TIMEOUT(60);
	t_need_mqdir();
	int before = our_queues();
	char bound[IPC_ADDR_MAX + 1];
	/* the child streams, the parent receives */
	ipc_listener *l = t_listen("mq", NULL, bound);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		ipc_conn *me;
		if (kill_client) {
			me = ipc_connect(bound, NULL);
		} else {
			me = t_accept(l);
		}
		if (!me)
			_exit(2);
		char buf[5000];
		memset(buf, 'x', sizeof buf);
		for (;;) /* until killed: blocks when the peer stops reading */
			if (ipc_send(me, buf, sizeof buf, 0) < 0)
				_exit(3);
	}
	ipc_conn *peer;
	if (kill_client)
		peer = t_accept(l);
	else
		peer = ipc_connect(bound, NULL);
	CHECK(peer != NULL);
	char buf[8192];
	for (int i = 0; i < 20; i++)
		CHECK(ipc_recv(peer, buf, sizeof buf, 0) == 5000);
	t_sleep_ms(100); /* let the child block in a full queue */
	CHECK(kill(pid, SIGKILL) == 0);
	CHECK(waitpid(pid, NULL, 0) == pid);
	int64_t t0 = t_now_ms();
	ssize_t r;
	while ((r = ipc_recv(peer, buf, sizeof buf, 0)) == 5000)
		;
	int64_t dt = t_now_ms() - t0;
	CHECKF(r == -1 && (errno == ECONNRESET || errno == EPIPE), "after the kill: %zd", r);
	CHECKF(dt < DEAD_BOUND_MS, "death noticed after %lld ms", (long long)dt);
	CHECK_FAILS(ipc_send(peer, "x", 1, 0), EPIPE);
	CHECK(ipc_close(peer) == 0 || errno == EPIPE);
	ipc_listener_close(l);
	CHECK(our_queues() == before);
}

TEST(mq_sigkill_client_mid_transfer)
{
	kill_mid_transfer(1);
}

TEST(mq_sigkill_server_mid_transfer)
{
	kill_mid_transfer(0);
}

/* A blocked receive notices a SIGKILLed peer within the bound. */
TEST(mq_dead_peer_blocked_recv_bound)
{
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("mq", NULL, bound);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		ipc_conn *c = ipc_connect(bound, NULL);
		if (!c || ipc_send(c, "up", 2, 0) != 2)
			_exit(2);
		pause();
		_exit(0);
	}
	ipc_conn *s = t_accept(l);
	char b[16];
	CHECK(ipc_recv(s, b, sizeof b, 0) == 2);
	t_sleep_ms(50);
	CHECK(kill(pid, SIGKILL) == 0);
	int64_t t0 = t_now_ms();
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), ECONNRESET);
	CHECKF(t_now_ms() - t0 < DEAD_BOUND_MS, "took %lld ms", (long long)(t_now_ms() - t0));
	waitpid(pid, NULL, 0);
	ipc_close(s);
	ipc_listener_close(l);
}

TEST(mq_64mib_message)
{
	TEST_TIMEOUT(60);
	const size_t n = (size_t)64 << 20;
	ipc_conn *s, *c;
	t_pair("mq", NULL, &s, &c);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		char *b = malloc(n);
		if (!b)
			_exit(2);
		t_fill(b, n, 64);
		_exit(ipc_send(c, b, n, 0) == (ssize_t)n && ipc_close(c) == 0 ? 0 : 3);
	}
	/* c stays open here untouched: after fork only the child uses it */
	void *p = NULL;
	CHECK(ipc_recv_alloc(s, &p, 0) == (ssize_t)n);
	CHECK(t_verify(p, n, 64));
	free(p);
	CHECK_FAILS(ipc_recv(s, NULL, 0, 0), EPIPE);
	int st;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ipc_close(s);
}

/* Queue attributes come from the kernel's limits at run time. */
TEST(mq_limits_from_kernel)
{
	t_need_mqdir();
	long msg_max = 10, size_max = 8192;
	FILE *f = fopen("/proc/sys/fs/mqueue/msg_max", "r");
	if (f) {
		CHECK(fscanf(f, "%ld", &msg_max) == 1);
		fclose(f);
	}
	f = fopen("/proc/sys/fs/mqueue/msgsize_max", "r");
	if (f) {
		CHECK(fscanf(f, "%ld", &size_max) == 1);
		fclose(f);
	}
	/* the queues are unlinked at once: check through /proc/self/fdinfo */
	ipc_conn *s, *c;
	t_pair("mq", NULL, &s, &c);
	int checked = 0;
	for (int fd = 3; fd < 1024; fd++) {
		struct mq_attr a;
		if (mq_getattr(fd, &a) < 0)
			continue;
		CHECKF(a.mq_maxmsg >= 1 && a.mq_maxmsg <= msg_max, "maxmsg %ld > msg_max %ld", (long)a.mq_maxmsg, msg_max);
		CHECKF(a.mq_msgsize >= 64 && a.mq_msgsize <= size_max, "msgsize %ld > %ld", (long)a.mq_msgsize, size_max);
		checked++;
	}
	CHECK(checked >= 4);
	ipc_close(s);
	ipc_close(c);
}

/* Running out of queue memory (RLIMIT_MSGQUEUE) is a clear error. */
TEST(mq_out_of_queues)
{
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("mq", NULL, bound);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = {0, 0};
		if (setrlimit(RLIMIT_MSGQUEUE, &rl) < 0)
			_exit(2);
		ipc_conn *c = ipc_connect(bound, NULL);
		if (c)
			_exit(3);
		_exit(errno == EMFILE || errno == ENOSPC ? 0 : 4);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", WEXITSTATUS(st));
	ipc_listener_close(l);
}

TEST(mq_peer_credentials)
{
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("mq", NULL, bound);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		ipc_conn *c = ipc_connect(bound, NULL);
		char b[4];
		_exit(c && ipc_recv(c, b, sizeof b, 0) < 0 ? 0 : 1);
	}
	ipc_conn *s = t_accept(l);
	struct ipc_cred cr;
	CHECK(ipc_conn_peer_cred(s, &cr) == 0);
	CHECK(cr.pid == pid && cr.uid == getuid() && cr.gid == getgid());
	ipc_close(s);
	waitpid(pid, NULL, 0);
	ipc_listener_close(l);
}

/* Mode 0600 (default): another uid is refused with EACCES. */
TEST(mq_access_denied_other_uid)
{
	if (geteuid() != 0)
		SKIP("needs root to switch uid");
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("mq", NULL, bound);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(2);
		ipc_conn *c = ipc_connect(bound, NULL);
		if (!c)
			_exit(errno == EACCES ? 0 : 3);
		char b[4];
		ssize_t r = ipc_recv(c, b, sizeof b, 0);
		_exit(r < 0 && errno == EACCES ? 0 : 4);
	}
	/* the listener keeps pumping; the refused client never shows up */
	int st = 0;
	for (int i = 0; i < 200; i++) {
		ipc_conn *c = ipc_accept(l, IPC_DONTWAIT);
		CHECK(c == NULL);
		if (waitpid(pid, &st, WNOHANG) == pid)
			break;
		t_sleep_ms(20);
	}
	CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", WEXITSTATUS(st));
	ipc_listener_close(l);

	/* mode 0666: allowed */
	struct ipc_options o;
	ipc_options_init(&o);
	o.mode = 0666;
	l = t_listen("mq", &o, bound);
	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(2);
		ipc_conn *c = ipc_connect(bound, NULL);
		char b[4];
		_exit(c && ipc_recv(c, b, sizeof b, 0) == 2 ? 0 : 3);
	}
	ipc_conn *s = t_accept(l);
	CHECK(ipc_send(s, "ok", 2, 0) == 2);
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ipc_close(s);
	ipc_listener_close(l);
}

/* Sending to a peer that closed fails with EPIPE (its queue is stuffed). */
TEST(mq_send_after_peer_close)
{
	ipc_conn *s, *c;
	t_pair("mq", NULL, &s, &c);
	CHECK(ipc_close(s) == 0);
	ssize_t r = 0;
	for (int i = 0; i < 10000 && r >= 0; i++)
		r = ipc_send(c, "x", 1, 0);
	CHECK(r == -1 && errno == EPIPE);
	CHECK_FAILS(ipc_recv(c, NULL, 0, 0), EPIPE);
	ipc_close(c);
}

/* Issue 11 item 5: 50 client processes of one uid served by one listener
 * under the default RLIMIT_MSGQUEUE (queues are small by default), all
 * connected at once.  The budget is per user: other programs of the same
 * uid using POSIX queues at the same moment can make this fail (EMFILE). */
TEST(mq_fifty_clients)
{
	TEST_TIMEOUT(120);
	enum { N = 50, ROUNDS = 5 };
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("mq", NULL, bound);
	pid_t pids[N];
	fflush(NULL);
	for (int i = 0; i < N; i++) {
		pids[i] = fork();
		CHECK(pids[i] >= 0);
		if (pids[i] == 0) {
			ipc_conn *c = ipc_connect(bound, NULL);
			if (!c) {
				fprintf(stderr, "client %d: connect: %s\n", i, strerror(errno));
				_exit(2);
			}
			static char out[70000], in[70000];
			for (int r = 0; r < ROUNDS; r++) {
				size_t len = (size_t)((i * 7919 + r * 104729) % 65536);
				t_fill(out, len, (uint64_t)(i * ROUNDS + r));
				if (ipc_send(c, out, len, 0) != (ssize_t)len ||
				    ipc_recv(c, in, sizeof in, 0) != (ssize_t)len ||
				    !t_verify(in, len, (uint64_t)(i * ROUNDS + r)))
					_exit(3);
			}
			_exit(ipc_close(c) == 0 ? 0 : 4);
		}
	}
	/* one thread, ipc_poll: echo every message back */
	struct ipc_pollitem it[N + 1];
	int n = 1, done = 0, accepted = 0;
	it[0] = (struct ipc_pollitem){.listener = l, .events = IPC_POLLIN};
	static char buf[70000];
	int64_t t0 = t_now_ms();
	while (done < N) {
		CHECKF(t_now_ms() - t0 < 90000, "served %d of %d (%d accepted)", done, N, accepted);
		int st;
		pid_t w = waitpid(-1, &st, WNOHANG); /* a client that failed ends the test now */
		for (int i = 0; w > 0 && i < N; i++)
			if (pids[i] == w) {
				CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client %d: status %#x", i, st);
				pids[i] = 0;
			}
		int r = ipc_poll(it, accepted < N ? 1 : (size_t)n, 1000);
		CHECK(r >= 0);
		if (it[0].revents & IPC_POLLIN) {
			ipc_conn *c;
			while ((c = ipc_accept(l, IPC_DONTWAIT))) {
				CHECK(n < N + 1);
				it[n++] = (struct ipc_pollitem){.conn = c, .events = IPC_POLLIN};
				accepted++;
			}
		}
		for (int i = 1; i < n; i++) {
			/* serve nobody until all are connected: 50 at once */
			if (!it[i].revents || accepted < N)
				continue;
			ssize_t m;
			while ((m = ipc_recv(it[i].conn, buf, sizeof buf, IPC_DONTWAIT)) >= 0)
				CHECK(ipc_send(it[i].conn, buf, (size_t)m, 0) == m);
			if (errno == EAGAIN)
				continue;
			CHECKF(errno == EPIPE, "client %d: %s", i, strerror(errno));
			ipc_close(it[i].conn);
			it[i--] = it[--n];
			done++;
		}
	}
	for (int i = 0; i < N; i++) {
		int st;
		if (!pids[i])
			continue;
		CHECK(waitpid(pids[i], &st, 0) == pids[i]);
		CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client %d: status %#x", i, st);
	}
	ipc_listener_close(l);
}

/* Issue 11 item 6: messages sent before an orderly close are delivered
 * even when the client exited before the server accepted. */
TEST(mq_send_close_before_accept)
{
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("mq", NULL, bound);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		ipc_conn *c = ipc_connect(bound, NULL);
		if (!c)
			_exit(2);
		for (int i = 0; i < 3; i++) {
			char m[8];
			int n = snprintf(m, sizeof m, "m%d", i);
			if (ipc_send(c, m, (size_t)n, 0) != n)
				_exit(3);
		}
		_exit(ipc_close(c) == 0 ? 0 : 4);
	}
	t_wait_ok(pid);
	ipc_conn *s = t_accept(l);
	for (int i = 0; i < 3; i++) {
		char m[8], want[8];
		int n = snprintf(want, sizeof want, "m%d", i);
		ssize_t r = ipc_recv(s, m, sizeof m, 0);
		CHECKF(r == n && !memcmp(m, want, (size_t)n), "message %d: %zd", i, r);
	}
	char b[8];
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), EPIPE);
	ipc_close(s);
	ipc_listener_close(l);
}

/* Issue 11 item 8: a child that keeps a handle after fork() while data is
 * held finishes its sends and its close (no thread of the parent's was
 * needed to move the held data). */
TEST(mq_fork_child_keeps_handle)
{
	TEST_TIMEOUT(30);
	enum { BIG = 300000 };
	ipc_conn *s, *c;
	t_pair("mq", NULL, &s, &c);
	char *big = malloc(BIG);
	CHECK(big != NULL);
	t_fill(big, BIG, 7);
	CHECK(ipc_send(c, big, BIG, IPC_DONTWAIT) == BIG); /* mostly held */
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		if (ipc_send(c, "x", 1, 0) != 1)
			_exit(2);
		_exit(ipc_close(c) == 0 ? 0 : 3);
	}
	/* the parent forgets c: after fork only the child uses it */
	void *p;
	CHECK(ipc_recv_alloc(s, &p, 0) == BIG);
	CHECK(t_verify(p, BIG, 7));
	free(p);
	char b[4];
	CHECK(ipc_recv(s, b, sizeof b, 0) == 1 && b[0] == 'x');
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), EPIPE);
	t_wait_ok(pid);
	ipc_close(s);
	free(big);
}

/* DESIGN 4 on mq: a non-blocking send of any size is accepted whole when
 * nothing is held; EAGAIN while something is; IPC_POLLOUT means exactly
 * "nothing held", and readiness moves the held data on. */
TEST(mq_dontwait_send_any_size)
{
	TEST_TIMEOUT(30);
	enum { BIG = 1 << 20 };
	ipc_conn *s, *c;
	t_pair("mq", NULL, &s, &c);
	char *big = malloc(BIG);
	CHECK(big != NULL);
	t_fill(big, BIG, 3);
	CHECK(ipc_send(c, big, BIG, IPC_DONTWAIT) == BIG);
	short pev = 0;
	CHECKF(ipc_conn_ready(c, IPC_POLLOUT, &pev) == 0 && pev, "held: not writable, pev %#x", pev);
	CHECK_FAILS(ipc_send(c, "a", 1, IPC_DONTWAIT), EAGAIN);
	/* the receiver takes what is queued; the sender's readiness moves the
	 * rest on (no thread does it); POLLOUT once nothing is held */
	void *p = NULL;
	int64_t t0 = t_now_ms();
	int polls = 0;
	struct ipc_pollitem it[2] = {{.conn = c, .events = IPC_POLLOUT}, {.conn = s, .events = IPC_POLLIN}};
	for (;;) {
		CHECKF(t_now_ms() - t0 < 20000, "stuck after %d polls", polls);
		CHECK(ipc_poll(it, 2, 5000) > 0);
		polls++;
		if (it[1].revents & IPC_POLLIN) {
			ssize_t r = ipc_recv_alloc(s, &p, IPC_DONTWAIT);
			if (r >= 0) {
				CHECK(r == BIG && t_verify(p, BIG, 3));
				free(p);
				break;
			}
			CHECK(errno == EAGAIN);
		}
	}
	CHECK(ipc_conn_ready(c, IPC_POLLOUT, &pev) == IPC_POLLOUT);
	CHECK(ipc_send(c, "a", 1, IPC_DONTWAIT) == 1);
	char b[4];
	CHECK(ipc_recv(s, b, sizeof b, 0) == 1);
	/* flush moves held data too */
	CHECK(ipc_send(c, big, BIG, IPC_DONTWAIT) == BIG);
	CHECK_FAILS(ipc_flush(c, IPC_DONTWAIT), EAGAIN);
	free(big);
	ipc_close(s);
	CHECK(ipc_close(c) == -1 && errno == EPIPE); /* peer closed: held data dropped */
}

struct closer {
	ipc_conn *c;
	int rc, err;
	int64_t ms;
};

static void *closer_fn(void *arg)
{
	struct closer *k = arg;
	int64_t t0 = t_now_ms();
	k->rc = ipc_close(k->c);
	k->err = errno;
	k->ms = t_now_ms() - t0;
	return NULL;
}

/* DESIGN 5 on mq: both sides hold unsent data and close at the same
 * moment: each keeps reading (and dropping) the other's data while it
 * lingers, so both finish long before the linger bound. */
TEST(mq_close_both_holding)
{
	TEST_TIMEOUT(30);
	enum { BIG = 200000 };
	ipc_conn *s, *c;
	t_pair("mq", NULL, &s, &c);
	char *big = calloc(1, BIG);
	CHECK(big != NULL);
	CHECK(ipc_send(c, big, BIG, IPC_DONTWAIT) == BIG);
	CHECK(ipc_send(s, big, BIG, IPC_DONTWAIT) == BIG);
	struct closer a = {c, 0, 0, 0}, b = {s, 0, 0, 0};
	pthread_t ta, tb;
	CHECK(pthread_create(&ta, NULL, closer_fn, &a) == 0);
	CHECK(pthread_create(&tb, NULL, closer_fn, &b) == 0);
	CHECK(pthread_join(ta, NULL) == 0 && pthread_join(tb, NULL) == 0);
	CHECKF(a.ms < 5000 && b.ms < 5000, "closes took %lld and %lld ms", (long long)a.ms, (long long)b.ms);
	free(big);
}
