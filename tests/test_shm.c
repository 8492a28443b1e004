/* test_shm.c - shm-specific tests: hostile rings, SIGKILL, leftovers, access. */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ipc_impl.h"
#include "test.h"

/* lib/shm.c test hook: 0 rx head, 1 rx tail, 2 rx data, 3 tx head, 4 tx
 * tail, 5 tx data, 6 our state word, 7 the peer's. */
void *ipc__shm_test_ptr(ipc_conn *c, int what, size_t *ringsize);

static _Atomic uint64_t *word(ipc_conn *c, int what)
{
	void *p = ipc__shm_test_ptr(c, what, NULL);
	CHECK(p != NULL);
	return p;
}

static void opts_cap(struct ipc_options *o, size_t cap)
{
	ipc_options_init(o);
	o->capacity = cap;
}

struct send_arg {
	ipc_conn *c;
	const void *buf;
	size_t len;
	ssize_t r;
};

static void *send_thread(void *p)
{
	struct send_arg *a = p;
	a->r = ipc_send(a->c, a->buf, a->len, 0);
	return NULL;
}

/* Send from another thread (a message larger than the ring needs a
 * reader at the same time), receive here. */
static void xfer(ipc_conn *a, ipc_conn *b, const void *buf, size_t len, uint64_t seq)
{
	struct send_arg sa = {a, buf, len, 0};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, send_thread, &sa) == 0);
	void *got = NULL;
	ssize_t r = ipc_recv_alloc(b, &got, 0);
	pthread_join(th, NULL);
	CHECK(sa.r == (ssize_t)len);
	CHECK(r == (ssize_t)len);
	CHECK(t_verify(got, len, seq));
	free(got);
}

/* Roundtrip one message each way. */
static void ping(ipc_conn *a, ipc_conn *b, size_t len, uint64_t seq)
{
	void *buf = malloc(len ? len : 1);
	CHECK(buf != NULL);
	t_fill(buf, len, seq);
	xfer(a, b, buf, len, seq);
	xfer(b, a, buf, len, seq);
	free(buf);
}

TEST(shm_basic)
{
	struct ipc_options o;
	opts_cap(&o, 4096);
	ipc_conn *s, *c;
	t_pair("shm", &o, &s, &c);
	CHECK(strcmp(ipc_conn_scheme(c), "shm") == 0);
	ping(c, s, 0, 1);
	ping(c, s, 100, 2);
	ping(c, s, 4092, 3);      /* exactly fills the ring */
	ping(c, s, 4093, 4);      /* streams */
	ping(c, s, 300000, 5);    /* many times the ring */
	/* nonblocking: too big for the ring -> EMSGSIZE; EAGAIN when full */
	char buf[5000] = {0};
	CHECK_FAILS(ipc_send(c, buf, 4093, IPC_DONTWAIT), EMSGSIZE);
	CHECK(ipc_send(c, buf, 3000, IPC_DONTWAIT) == 3000);
	CHECK_FAILS(ipc_send(c, buf, 3000, IPC_DONTWAIT), EAGAIN);
	CHECK_FAILS(ipc_recv(s, buf, 10, 0), EMSGSIZE);
	CHECK(ipc_recv(s, buf, sizeof buf, 0) == 3000);
	CHECK_FAILS(ipc_recv(s, buf, sizeof buf, IPC_DONTWAIT), EAGAIN);
	struct ipc_cred cr;
	CHECK(ipc_conn_peer_cred(s, &cr) == 0);
	CHECK(cr.pid == getpid() && cr.uid == geteuid() && cr.gid == getegid());
	CHECK(ipc_conn_peer_cred(c, &cr) == 0);
	CHECK(cr.pid == getpid() && cr.uid == geteuid());
	/* orderly close: queued messages first, then EPIPE */
	CHECK(ipc_send(c, "x", 1, 0) == 1);
	CHECK(ipc_close(c) == 0);
	CHECK(ipc_recv(s, buf, sizeof buf, 0) == 1);
	CHECK_FAILS(ipc_recv(s, buf, sizeof buf, 0), EPIPE);
	CHECK_FAILS(ipc_send(s, buf, 1, 0), EPIPE);
	CHECK(ipc_close(s) == 0);
}

TEST(shm_names)
{
	char longname[300];
	memset(longname, 'a', sizeof longname);
	memcpy(longname, "shm:", 4);
	longname[sizeof longname - 1] = '\0';
	CHECK_FAILS(ipc_listen(longname, NULL), ENAMETOOLONG);
	CHECK_FAILS(ipc_connect(longname, NULL), ENAMETOOLONG);
	CHECK_FAILS(ipc_listen("shm:a/b", NULL), EINVAL);
	CHECK_FAILS(ipc_listen("shm:a b", NULL), EINVAL);
	CHECK_FAILS(ipc_listen("shm:", NULL), EINVAL);
	const char *a = t_addr("shm");
	CHECK_FAILS(ipc_connect(a, NULL), ECONNREFUSED);
	ipc_listener *l = ipc_listen(a, NULL);
	CHECK(l != NULL);
	CHECK_FAILS(ipc_listen(a, NULL), EADDRINUSE);
	char bound[IPC_ADDR_MAX + 1];
	CHECK(ipc_listener_addr(l, bound, sizeof bound) == (int)strlen(a));
	CHECK(strcmp(bound, a) == 0);
	CHECK_FAILS(ipc_listener_addr(l, bound, 5), ENOSPC);
	CHECK(ipc_listener_close(l) == 0);
	CHECK_FAILS(ipc_connect(a, NULL), ECONNREFUSED);
	l = ipc_listen(a, NULL); /* the name is free again at once */
	CHECK(l != NULL);
	CHECK(ipc_listener_close(l) == 0);
}

TEST(shm_many_clients_no_leftovers)
{
	int shm0 = t_dir_count("/dev/shm"), fd0 = t_fd_count();
	struct ipc_options o;
	opts_cap(&o, 8192);
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("shm", &o, bound);
	enum { N = 20 };
	ipc_conn *cl[N], *sv[N];
	for (int i = 0; i < N; i++)
		CHECK((cl[i] = ipc_connect(bound, &o)) != NULL);
	for (int i = 0; i < N; i++) {
		CHECK((sv[i] = ipc_accept(l, 0)) != NULL);
		struct ipc_cred cr;
		CHECK(ipc_conn_peer_cred(sv[i], &cr) == 0 && cr.pid == getpid());
	}
	/* one stalled client does not block another: fill client 0's ring */
	char buf[1000] = {0};
	while (ipc_send(sv[0], buf, sizeof buf, IPC_DONTWAIT) == (ssize_t)sizeof buf)
		;
	CHECK(errno == EAGAIN);
	for (int i = 1; i < N; i++)
		ping(cl[i], sv[i], (size_t)i * 1000, (uint64_t)i);
	/* connections outlive their listener; a pending unaccepted one is reset */
	ipc_conn *late = ipc_connect(bound, &o);
	CHECK(late != NULL);
	CHECK(ipc_listener_close(l) == 0);
	CHECK_FAILS(ipc_recv(late, buf, sizeof buf, 0), ECONNRESET);
	CHECK(ipc_close(late) == 0);
	ping(cl[5], sv[5], 10, 5);
	for (int i = 0; i < N; i++) {
		CHECK(ipc_close(cl[i]) == 0);
		CHECK(ipc_close(sv[i]) == 0);
	}
	CHECK(t_dir_count("/dev/shm") == shm0);
	CHECK(t_fd_count() == fd0);
}

TEST(shm_readiness)
{
	struct ipc_options o;
	opts_cap(&o, 4096);
	ipc_conn *s, *c;
	t_pair("shm", &o, &s, &c);
	struct ipc_pollitem it = {.conn = s, .events = IPC_POLLIN};
	CHECK(ipc_poll(&it, 1, 0) == 0);
	/* raw poll on the descriptor: wakes when the peer sends */
	short pev = 0;
	CHECK(ipc_conn_ready(s, IPC_POLLIN, &pev) == 0);
	struct pollfd p = {.fd = ipc_conn_fd(s), .events = pev};
	CHECK(poll(&p, 1, 0) == 0);
	CHECK(ipc_send(c, "hi", 2, 0) == 2);
	CHECK(poll(&p, 1, 1000) == 1);
	CHECK(ipc_conn_ready(s, IPC_POLLIN, &pev) & IPC_POLLIN);
	char b[8];
	CHECK(ipc_recv(s, b, sizeof b, 0) == 2);
	CHECK(ipc_conn_ready(s, IPC_POLLIN, &pev) == 0);
	/* level-triggered loop does not spin on stale wake-ups */
	p.revents = 0;
	CHECK(poll(&p, 1, 50) == 0);
	/* writable until full, then again after the peer drains */
	it.conn = c;
	it.events = IPC_POLLOUT;
	CHECK(ipc_poll(&it, 1, 0) == 1 && (it.revents & IPC_POLLOUT));
	char big[4040] = {0};
	CHECK(ipc_send(c, big, sizeof big, 0) == (ssize_t)sizeof big);
	CHECK(ipc_poll(&it, 1, 0) == 0);
	CHECK(ipc_recv(s, big, sizeof big, 0) == (ssize_t)sizeof big);
	CHECK(ipc_poll(&it, 1, 1000) == 1 && (it.revents & IPC_POLLOUT));
	/* peer closes: readable with HUP, receive reports EPIPE */
	CHECK(ipc_close(c) == 0);
	it.conn = s;
	it.events = IPC_POLLIN;
	CHECK(ipc_poll(&it, 1, 1000) == 1 && (it.revents & IPC_POLLIN));
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), EPIPE);
	CHECK(ipc_close(s) == 0);
}

/* A fresh pair whose client ring we corrupt; returns the client. */
static void fresh(ipc_conn **s, ipc_conn **c)
{
	struct ipc_options o;
	opts_cap(&o, 4096);
	o.recv_timeout_ms = 2000;
	o.send_timeout_ms = 2000;
	t_pair("shm", &o, s, c);
	/* move the indices off zero */
	ping(*c, *s, 1000, 7);
	ping(*c, *s, 3000, 8);
}

TEST(shm_corrupt_ring)
{
	ipc_conn *s, *c, *s2, *c2;
	char buf[8192];
	size_t rs;
	/* an unrelated connection that must stay healthy throughout */
	fresh(&s2, &c2);

	/* 1. head far beyond tail + capacity */
	fresh(&s, &c);
	_Atomic uint64_t *head = word(c, 0), *tail = word(c, 1);
	atomic_store(head, atomic_load(tail) + (1u << 20));
	CHECK_FAILS(ipc_recv(c, buf, sizeof buf, 0), EPROTO);
	CHECK_FAILS(ipc_recv(c, buf, sizeof buf, 0), EPROTO); /* sticky */
	CHECK_FAILS(ipc_send(c, buf, 1, 0), EPROTO);
	/* the peer sees the failure */
	CHECK(ipc_recv(s, buf, sizeof buf, 0) < 0 && (errno == ECONNRESET || errno == EPIPE));
	CHECK(ipc_close(c) < 1 && ipc_close(s) < 1);

	/* 2. head moving backwards (below tail) */
	fresh(&s, &c);
	head = word(c, 0);
	atomic_store(head, 3);
	CHECK_FAILS(ipc_recv(c, buf, sizeof buf, IPC_DONTWAIT), EPROTO);
	ipc_close(c);
	ipc_close(s);

	/* 3. a length over max_msg_size, and huge negative-looking lengths */
	uint32_t bad[] = {0xffffffffu, 0x80000000u, (64u << 20) + 1};
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		fresh(&s, &c);
		head = word(c, 0);
		tail = word(c, 1);
		unsigned char *data = ipc__shm_test_ptr(c, 2, &rs);
		CHECK(data != NULL && rs == 4096);
		uint64_t t = atomic_load(tail);
		for (int i = 0; i < 4; i++) /* header wrapping the ring end too */
			data[(t + (uint64_t)i) & (rs - 1)] = (unsigned char)(bad[k] >> (8 * i));
		atomic_store(head, t + 8);
		CHECK_FAILS(ipc_recv(c, buf, sizeof buf, 0), EPROTO);
		void *p = NULL;
		CHECK_FAILS(ipc_recv_alloc(c, &p, 0), EPROTO);
		CHECK(p == NULL);
		ipc_close(c);
		ipc_close(s);
	}

	/* 4. torn header: a length that fits but bytes never published */
	fresh(&s, &c);
	head = word(c, 0);
	tail = word(c, 1);
	unsigned char *data = ipc__shm_test_ptr(c, 2, &rs);
	uint64_t t = atomic_load(tail);
	uint32_t l = 2000;
	for (int i = 0; i < 4; i++)
		data[(t + (uint64_t)i) & (rs - 1)] = (unsigned char)(l >> (8 * i));
	atomic_store(head, t + 100);
	CHECK_FAILS(ipc_recv(c, buf, sizeof buf, IPC_DONTWAIT), EAGAIN);
	ipc_close(s); /* writer gone with a torn frame: never delivered */
	CHECK_FAILS(ipc_recv(c, buf, sizeof buf, 0), ECONNRESET);
	ipc_close(c);

	/* 5. a streamed frame announced, then the writer closes mid-way */
	fresh(&s, &c);
	head = word(c, 0);
	tail = word(c, 1);
	data = ipc__shm_test_ptr(c, 2, &rs);
	t = atomic_load(tail);
	l = 1u << 20;
	for (int i = 0; i < 4; i++)
		data[(t + (uint64_t)i) & (rs - 1)] = (unsigned char)(l >> (8 * i));
	atomic_store(head, t + 4 + 3000);
	CHECK_FAILS(ipc_recv(c, buf, sizeof buf, 0), EMSGSIZE);
	CHECK_FAILS(ipc_recv(c, buf, sizeof buf, 0), EMSGSIZE); /* still queued */
	void *p = NULL;
	CHECK_FAILS(ipc_recv_alloc(c, &p, IPC_DONTWAIT), EAGAIN);
	ipc_close(s);
	CHECK_FAILS(ipc_recv_alloc(c, &p, 0), ECONNRESET);
	ipc_close(c);

	/* 6. the consumer's tail pushed past our head (producer side) */
	fresh(&s, &c);
	CHECK(ipc_send(c, buf, 3000, 0) == 3000);
	_Atomic uint64_t *ttail = word(c, 4), *thead = word(c, 3);
	atomic_store(ttail, atomic_load(thead) + 5000);
	CHECK_FAILS(ipc_send(c, buf, 2000, 0), EPROTO);
	ipc_close(c);
	ipc_close(s);

	/* 7. tail moving backwards */
	fresh(&s, &c);
	CHECK(ipc_send(c, buf, 3000, 0) == 3000);
	ttail = word(c, 4);
	atomic_store(ttail, 1);
	CHECK_FAILS(ipc_send(c, buf, 2000, 0), EPROTO);
	ipc_close(c);
	ipc_close(s);

	/* 8. garbage everywhere: many random rings, never a crash */
	for (int round = 0; round < 40; round++) {
		fresh(&s, &c);
		ipc_conn_set_timeouts(c, 0, 0);
		data = ipc__shm_test_ptr(c, 2, &rs);
		for (size_t i = 0; i < rs; i++)
			data[i] = (unsigned char)(random() >> 7);
		if (round & 1) {
			for (size_t i = 0; i < rs; i += 4 + (size_t)(random() % 64))
				memset(data + i, 0, 2); /* plausible small lengths */
		}
		uint64_t tl = atomic_load(word(c, 1));
		uint64_t h = round % 4 == 0 ? (uint64_t)random() << 20 : tl + (uint64_t)(random() % 5000);
		atomic_store(word(c, 0), h);
		if (round % 3 == 0)
			atomic_store((_Atomic uint32_t *)ipc__shm_test_ptr(c, 7, NULL), (uint32_t)random());
		for (int k = 0; k < 50; k++) {
			void *q = NULL;
			ssize_t r = (k & 1) ? ipc_recv(c, buf, sizeof buf, 0) : ipc_recv_alloc(c, &q, 0);
			free(q);
			if (r < 0 && errno != EAGAIN && errno != EMSGSIZE)
				break;
		}
		ipc_send(c, buf, 100, 0);
		short pev;
		ipc_conn_ready(c, IPC_POLLIN | IPC_POLLOUT, &pev);
		ipc_close(c);
		ipc_close(s);
	}

	/* the unrelated connection never noticed */
	ping(c2, s2, 5000, 99);
	CHECK(ipc_close(c2) == 0 && ipc_close(s2) == 0);
}

/* ---- processes --------------------------------------------------------- */

static void wait_child(pid_t pid)
{
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
}

TEST(shm_kill_writer_mid_message)
{
	int shm0 = t_dir_count("/dev/shm"), fd0 = t_fd_count();
	struct ipc_options o;
	opts_cap(&o, 16384);
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("shm", &o, bound);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		ipc_conn *c = ipc_connect(bound, &o);
		if (!c)
			_exit(2);
		size_t n = 8u << 20;
		char *m = calloc(1, n);
		ipc_send(c, "first", 5, 0);
		ipc_send(c, m, n, 0); /* blocks: the parent reads only part */
		_exit(3);
	}
	ipc_conn *s = ipc_accept(l, 0);
	CHECK(s != NULL);
	char b[16];
	CHECK(ipc_recv(s, b, sizeof b, 0) == 5);
	/* take part of the big message, then kill the writer in the middle */
	void *p = NULL;
	usleep(50000);
	CHECK_FAILS(ipc_recv_alloc(s, &p, IPC_DONTWAIT), EAGAIN);
	usleep(50000); /* the writer refills the ring and blocks again */
	kill(pid, SIGKILL);
	wait_child(pid);
	ipc_conn_set_timeouts(s, -1, 5000);
	int64_t t0 = t_now_ms();
	CHECK_FAILS(ipc_recv_alloc(s, &p, 0), ECONNRESET);
	CHECK(p == NULL);
	CHECK(t_now_ms() - t0 < 2000);
	CHECK_FAILS(ipc_send(s, b, 1, 0), EPIPE);
	CHECK(ipc_close(s) == 0 || errno);
	CHECK(ipc_listener_close(l) == 0);
	CHECK(t_dir_count("/dev/shm") == shm0);
	CHECK(t_fd_count() == fd0);
}

static void *killer(void *arg)
{
	usleep(200000);
	kill(*(pid_t *)arg, SIGKILL);
	return NULL;
}

TEST(shm_kill_reader_while_writer_blocked)
{
	int shm0 = t_dir_count("/dev/shm"), fd0 = t_fd_count();
	struct ipc_options o;
	opts_cap(&o, 8192);
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("shm", &o, bound);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		ipc_conn *c = ipc_connect(bound, &o);
		if (!c)
			_exit(2);
		char b[16];
		ipc_recv(c, b, sizeof b, 0); /* one message, then stall */
		pause();
		_exit(3);
	}
	ipc_conn *s = ipc_accept(l, 0);
	CHECK(s != NULL);
	char buf[1000] = {0};
	CHECK(ipc_send(s, buf, 10, 0) == 10);
	for (int i = 0; i < 1000 && ipc_send(s, buf, sizeof buf, IPC_DONTWAIT) > 0; i++)
		;
	CHECK(errno == EAGAIN);
	pthread_t th;
	CHECK(pthread_create(&th, NULL, killer, &pid) == 0);
	int64_t t0 = t_now_ms();
	ssize_t r = 0;
	while (r >= 0)
		r = ipc_send(s, buf, sizeof buf, 0); /* blocks until the kill */
	CHECKF(errno == EPIPE, "send after reader death: %d", errno);
	CHECK(t_now_ms() - t0 < 3000);
	pthread_join(th, NULL);
	wait_child(pid);
	/* and a big streamed send fails too rather than hang */
	char *big = calloc(1, 1u << 20);
	CHECK_FAILS(ipc_send(s, big, 1u << 20, 0), EPIPE);
	free(big);
	ipc_close(s);
	CHECK(ipc_listener_close(l) == 0);
	CHECK(t_dir_count("/dev/shm") == shm0);
	CHECK(t_fd_count() == fd0);
}

TEST(shm_kill_listener)
{
	int shm0 = t_dir_count("/dev/shm"), fd0 = t_fd_count();
	const char *a = t_addr("shm");
	int pfd[2];
	CHECK(pipe(pfd) == 0);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		ipc_listener *l = ipc_listen(a, NULL);
		if (!l)
			_exit(2);
		if (write(pfd[1], "r", 1) != 1)
			_exit(2);
		ipc_conn *c = ipc_accept(l, 0);
		char b[64];
		ssize_t n;
		while (c && (n = ipc_recv(c, b, sizeof b, 0)) >= 0)
			ipc_send(c, b, (size_t)n, 0);
		_exit(3);
	}
	char r;
	CHECK(read(pfd[0], &r, 1) == 1);
	close(pfd[0]);
	close(pfd[1]);
	ipc_conn *c = ipc_connect(a, NULL);
	CHECK(c != NULL);
	ipc_conn *c2 = ipc_connect(a, NULL); /* never accepted */
	CHECK(c2 != NULL);
	char b[64];
	CHECK(ipc_send(c, "echo", 4, 0) == 4);
	CHECK(ipc_recv(c, b, sizeof b, 0) == 4);
	/* the listener dies while we wait for an answer */
	ipc_conn_set_timeouts(c, -1, 5000);
	CHECK(ipc_send(c, "x", 0, 0) == 0);
	CHECK(ipc_recv(c, b, sizeof b, 0) == 0);
	kill(pid, SIGKILL);
	wait_child(pid);
	int64_t t0 = t_now_ms();
	CHECK_FAILS(ipc_recv(c, b, sizeof b, 0), ECONNRESET);
	CHECK(t_now_ms() - t0 < 2000);
	ssize_t sr = 0;
	for (int i = 0; i < 100 && sr >= 0; i++)
		sr = ipc_send(c, "y", 1, 0);
	CHECK(sr < 0 && errno == EPIPE);
	CHECK_FAILS(ipc_recv(c2, b, sizeof b, 0), ECONNRESET);
	CHECK_FAILS(ipc_connect(a, NULL), ECONNREFUSED);
	ipc_close(c);
	ipc_close(c2);
	CHECK(t_dir_count("/dev/shm") == shm0);
	CHECK(t_fd_count() == fd0);
	/* the name is free again */
	ipc_listener *l = ipc_listen(a, NULL);
	CHECK(l != NULL);
	ipc_listener_close(l);
}

/* A foreign uid connects: refused with mode 0600, allowed with 0666. */
TEST(shm_access_other_uid)
{
	if (geteuid() != 0)
		SKIP("needs root to switch uid");
	for (int allow = 0; allow < 2; allow++) {
		struct ipc_options o;
		ipc_options_init(&o);
		o.mode = allow ? 0666 : 0600;
		o.recv_timeout_ms = 300;
		char bound[IPC_ADDR_MAX + 1];
		ipc_listener *l = t_listen("shm", &o, bound);
		fflush(NULL);
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			if (setgid(65534) < 0 || setuid(65534) < 0)
				_exit(9);
			struct ipc_options co;
			ipc_options_init(&co);
			co.connect_timeout_ms = 5000;
			co.recv_timeout_ms = 5000;
			ipc_conn *c = ipc_connect(bound, &co);
			if (!c)
				_exit(errno == EACCES ? 10 : 20 + (errno & 0xff));
			/* connect does not wait for the verdict: a refusal is
			 * seen by the first call that looks */
			if (ipc_send(c, "hi", 2, 0) != 2)
				_exit(errno == EACCES ? 10 : 12);
			char b[4];
			if (ipc_recv(c, b, sizeof b, 0) < 0)
				_exit(errno == EPIPE ? 0 : errno == EACCES ? 10 : 13);
			_exit(14);
		}
		ipc_conn *s = NULL;
		int st;
		for (int i = 0; i < 20 && !s; i++) {
			s = ipc_accept(l, 0);
			if (!allow && waitpid(pid, &st, WNOHANG) == pid)
				break; /* refused: the child is done */
		}
		if (!allow) {
			CHECK(s == NULL);
			CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 10, "child status %#x", st);
		} else {
			CHECK(s != NULL);
			struct ipc_cred cr;
			CHECK(ipc_conn_peer_cred(s, &cr) == 0);
			CHECK(cr.uid == 65534 && cr.gid == 65534 && cr.pid == pid);
			char b[4];
			CHECK(ipc_recv(s, b, sizeof b, 0) == 2);
			CHECK(ipc_close(s) == 0);
			CHECK(waitpid(pid, &st, 0) == pid);
			CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
		}
		ipc_listener_close(l);
	}
}

/* A raw peer on the rendezvous socket: silence, garbage, wrong version. */
TEST(shm_hostile_hello)
{
	struct ipc_options o;
	ipc_options_init(&o);
	o.recv_timeout_ms = 200;
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("shm", &o, bound);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int n = snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "libipc-shm/%s", bound + 4);
	socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
	int raw[4];
	for (int i = 0; i < 4; i++) {
		raw[i] = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		CHECK(raw[i] >= 0);
		CHECK(connect(raw[i], (struct sockaddr *)&sa, sl) == 0);
	}
	/* raw[0] stays silent; raw[1] sends garbage; raw[2] a wrong version
	 * (same layout, version 99); raw[3] a plausible hello without fds */
	CHECK(send(raw[1], "garbage!", 8, 0) == 8);
	uint32_t hv[14] = {0x4c495053u, 99};
	CHECK(send(raw[2], hv, 56, 0) == 56);
	hv[1] = 1;
	CHECK(send(raw[3], hv, 56, 0) == 56);
	/* a real client behind them is still accepted */
	ipc_conn *c = ipc_connect(bound, NULL);
	CHECK(c != NULL);
	ipc_conn *s = ipc_accept(l, 0);
	CHECK(s != NULL);
	ping(c, s, 10, 1);
	CHECK_FAILS(ipc_accept(l, 0), ETIMEDOUT);
	for (int i = 1; i < 4; i++) {
		unsigned char b = 0;
		CHECKF(recv(raw[i], &b, 1, 0) == 1 && b == EPROTO, "raw %d got %d", i, b);
	}
	for (int i = 0; i < 4; i++)
		close(raw[i]);
	CHECK(ipc_close(c) == 0 && ipc_close(s) == 0);
	ipc_listener_close(l);
}

/* One thread sends while another receives (run under TSan too). */
struct th_arg {
	ipc_conn *c;
	int n;
};

static void *sender(void *p)
{
	struct th_arg *a = p;
	char buf[3000];
	for (int i = 0; i < a->n; i++) {
		size_t len = (size_t)(i * 7) % sizeof buf;
		t_fill(buf, len, (uint64_t)i);
		if (ipc_send(a->c, buf, len, 0) != (ssize_t)len)
			return (void *)1;
	}
	return NULL;
}

TEST(shm_threads_duplex)
{
	struct ipc_options o;
	opts_cap(&o, 4096);
	ipc_conn *s, *c;
	t_pair("shm", &o, &s, &c);
	enum { N = 20000 };
	struct th_arg a1 = {c, N}, a2 = {s, N};
	pthread_t t1, t2;
	CHECK(pthread_create(&t1, NULL, sender, &a1) == 0);
	CHECK(pthread_create(&t2, NULL, sender, &a2) == 0);
	char buf[3000];
	for (int i = 0; i < N; i++) {
		size_t len = (size_t)(i * 7) % sizeof buf;
		CHECK(ipc_recv(s, buf, sizeof buf, 0) == (ssize_t)len && t_verify(buf, len, (uint64_t)i));
		CHECK(ipc_recv(c, buf, sizeof buf, 0) == (ssize_t)len && t_verify(buf, len, (uint64_t)i));
	}
	void *r1, *r2;
	pthread_join(t1, &r1);
	pthread_join(t2, &r2);
	CHECK(r1 == NULL && r2 == NULL);
	CHECK(ipc_close(c) == 0 && ipc_close(s) == 0);
}

/* Lost wake-ups: the producer publishes without a store-load fence when
 * membarrier() is available, the consumer fences before sleeping.  Bursts
 * separated by pauses make both sides go to sleep over and over (blocking
 * receive, full ring, poller); a missed wake-up shows as ETIMEDOUT. */
struct burst_arg {
	ipc_conn *c;
	int n;
	int fail;
};

static void *burst_sender(void *p)
{
	struct burst_arg *a = p;
	char buf[600];
	for (int i = 0; i < a->n; i++) {
		size_t len = (size_t)(i * 13) % sizeof buf;
		t_fill(buf, len, (uint64_t)i);
		if (ipc_send(a->c, buf, len, 0) != (ssize_t)len) {
			a->fail = 1;
			break;
		}
		if (i % 97 == 0)
			usleep((useconds_t)(i % 5) * 150); /* let the reader fall asleep */
	}
	return NULL;
}

TEST(shm_wakeups)
{
	struct ipc_options o;
	opts_cap(&o, 4096);
	o.send_timeout_ms = 10000;
	o.recv_timeout_ms = 10000;
	ipc_conn *s, *c;
	t_pair("shm", &o, &s, &c);
	enum { N = 6000 };
	struct burst_arg a = {c, N, 0};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, burst_sender, &a) == 0);
	char buf[600];
	for (int i = 0; i < N; i++) {
		size_t len = (size_t)(i * 13) % sizeof buf;
		if (i % 3 == 1) { /* wait as an event loop does */
			short pev = 0;
			int r;
			while ((r = ipc_conn_ready(s, IPC_POLLIN, &pev)) == 0) {
				struct pollfd p = {.fd = ipc_conn_fd(s), .events = pev};
				CHECK(poll(&p, 1, 10000) == 1);
			}
			CHECK(r & IPC_POLLIN);
			CHECK(ipc_recv(s, buf, sizeof buf, IPC_DONTWAIT) == (ssize_t)len);
		} else {
			CHECK(ipc_recv(s, buf, sizeof buf, 0) == (ssize_t)len);
		}
		CHECK(t_verify(buf, len, (uint64_t)i));
		if (i % 211 == 0)
			usleep(300); /* let the ring fill and the sender sleep */
	}
	pthread_join(th, NULL);
	CHECK(a.fail == 0);
	/* batches in both calls, each publication seen */
	struct iovec m[16];
	char mb[16][64];
	for (int i = 0; i < 16; i++)
		m[i] = (struct iovec){mb[i], (size_t)i};
	CHECK(ipc_send_batch(c, m, 16, 0) == 16);
	size_t got = 0;
	while (got < 16) {
		for (int i = 0; i < 16; i++)
			m[i] = (struct iovec){mb[i], sizeof mb[i]};
		ssize_t r = ipc_recv_batch(s, m, 16 - got, 0);
		CHECK(r >= 1);
		for (ssize_t k = 0; k < r; k++)
			CHECK(m[k].iov_len == got + (size_t)k);
		got += (size_t)r;
	}
	CHECK(ipc_close(c) == 0 && ipc_close(s) == 0);
}

/*
 * A late waker must not cost a wake-up.  A publication reads the other
 * side's waiting flag and only then takes it (exchange to 0) and sends the
 * wake-up byte; preempted in between, it may take the flag the sleeper has
 * meanwhile armed for its NEXT sleep.  The sleeper used to drain its wake
 * socket after arming, eating that byte, and then slept with no flag set:
 * the next publication woke nobody.  With a 1 MiB message streaming
 * through a small ring both sides then slept until their deadlines
 * (ipc-bench thr shm: "ipc_recv: Connection timed out" on the server).
 * The hook plays the late waker right after the sleeper armed its flag;
 * the other side publishes only once the sleeper sleeps (50 ms later).
 * The call must end well before its 10 s deadline (a generous "does not
 * hang" bound: it needs about 50 ms).
 */
void ipc__shm_test_sleep_hook(void (*fn)(ipc_conn *c, void *arg), void *arg);
void ipc__shm_test_wake(ipc_conn *c, int rx);

struct late_arg {
	ipc_conn *sleeper, *waker;
	int rx;            /* the sleeper waits to receive (1) or for room (0) */
	_Atomic int fired;
	size_t len;        /* message size */
	size_t pre;        /* !rx: size of a message queued first, or 0 */
	ssize_t r;         /* the other thread's result */
	int err;
};

static void late_waker(ipc_conn *c, void *p)
{
	struct late_arg *a = p;
	if (c != a->sleeper || atomic_exchange(&a->fired, 1))
		return;
	/* as the peer's publication does: its send path wakes a receiver,
	 * its receive path a sender */
	ipc__shm_test_wake(a->waker, a->rx ? 0 : 1);
}

static void wait_fired(struct late_arg *a)
{
	for (int i = 0; i < 10000 && !atomic_load(&a->fired); i++)
		usleep(1000);
	CHECK(atomic_load(&a->fired));
	usleep(50000); /* the sleeper is in poll() by now */
}

/* The waker: sends (when the receiver sleeps) or receives (when the
 * sender sleeps) once the hook has fired. */
static void *late_peer(void *p)
{
	struct late_arg *a = p;
	unsigned char *b = malloc(a->len);
	if (!b) {
		a->r = -1;
		a->err = ENOMEM;
		return NULL;
	}
	wait_fired(a);
	if (a->rx) {
		t_fill(b, a->len, 3);
		a->r = ipc_send(a->waker, b, a->len, 0);
	} else {
		if (a->pre && ipc_recv(a->waker, b, a->len, 0) != (ssize_t)a->pre) {
			a->r = -3;
			a->err = errno;
			free(b);
			return NULL;
		}
		a->r = ipc_recv(a->waker, b, a->len, 0);
		if (a->r == (ssize_t)a->len && !t_verify(b, a->len, 3))
			a->r = -2;
	}
	a->err = errno;
	free(b);
	return NULL;
}

static void late_waker_run(int rx, size_t len, size_t pre)
{
	struct ipc_options o;
	opts_cap(&o, 4096);
	o.max_msg_size = len + 64;
	o.send_timeout_ms = 10000;
	o.recv_timeout_ms = 10000;
	ipc_conn *s, *c;
	t_pair("shm", &o, &s, &c);
	unsigned char *b = malloc(len);
	CHECK(b != NULL);
	/* rx: s sleeps in recv, c sends; else c sleeps in send, s receives */
	struct late_arg a = {.sleeper = rx ? s : c, .waker = rx ? c : s, .rx = rx, .len = len, .pre = pre};
	if (pre) { /* the message then has to wait for room */
		t_fill(b, pre, 1);
		CHECK(ipc_send(c, b, pre, IPC_DONTWAIT) == (ssize_t)pre);
	}
	ipc__shm_test_sleep_hook(late_waker, &a);
	pthread_t th;
	CHECK(pthread_create(&th, NULL, late_peer, &a) == 0);
	ssize_t r;
	int64_t t0 = t_now_ms();
	if (rx) {
		r = ipc_recv(s, b, len, 0);
		CHECKF(r == (ssize_t)len, "recv: %zd (%s)", r, strerror(errno));
		CHECK(t_verify(b, len, 3));
	} else {
		t_fill(b, len, 3);
		r = ipc_send(c, b, len, 0);
		CHECKF(r == (ssize_t)len, "send: %zd (%s)", r, strerror(errno));
	}
	/* a lost wake-up sleeps to the deadline (then a small message still
	 * goes through: the data is there) */
	int64_t took = t_now_ms() - t0;
	CHECKF(took < 5000, "the sleeper slept %lld ms", (long long)took);
	pthread_join(th, NULL);
	ipc__shm_test_sleep_hook(NULL, NULL);
	CHECKF(a.r == (ssize_t)len, "%s: %zd (%s)", rx ? "send" : "recv", a.r, strerror(a.err));
	/* nothing held back: a late waker cost no wake-up, the data went */
	CHECK(ipc_flush(c, 0) == 0);
	CHECK(ipc_close(c) == 0 && ipc_close(s) == 0);
	free(b);
}

TEST(shm_late_waker_recv)
{
	late_waker_run(1, 100, 0);
}

TEST(shm_late_waker_send)
{
	late_waker_run(0, 4000, 200); /* does not fit beside the first */
}

TEST(shm_late_waker_stream)
{
	late_waker_run(0, (size_t)1 << 20, 0); /* 1 MiB through 4 KiB */
}
