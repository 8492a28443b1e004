/* test_listener_flood.c - peers the listener refuses by its mode do not
 * stall it: while processes of another uid (nobody) connect and close in a
 * tight loop against a default-mode (0600) listener, a non-blocking
 * ipc_accept, a timed one and ipc_poll on the listener each do a bounded
 * amount of work and return, and an honest client of our uid connecting
 * during the flood is accepted during the flood.  Raw flooders are plain
 * sockets on the listener's (unix: abstract) or rendezvous (shm, mq)
 * socket; root only.
 *
 * The bound is checked on the CPU time each call spends (the old loops
 * accepted and refused for as long as the flood lasted, seconds of CPU);
 * wall-clock times are printed but not checked: on a loaded machine the
 * flooders (and other tests) can keep this process off the CPU for longer
 * than any sane limit, which is not the library's doing. */
#define _GNU_SOURCE
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define NOBODY 65534
#define FLOODERS 4
#define FLOOD_MS 1500    /* at least; longer until the honest client is in */
#define FLOOD_MAX_MS 10000
#define CPU_MAX_MS 300   /* generous for CI under sanitizers */

/* The socket a raw peer of bound connects to, and its type. */
static socklen_t flood_addr(const char *bound, struct sockaddr_un *sa, int *type)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	int n;
	*type = SOCK_SEQPACKET;
	if (!strncmp(bound, "unix:@", 6)) {
		n = snprintf(sa->sun_path + 1, sizeof sa->sun_path - 1, "%s", bound + 6);
		*type = SOCK_STREAM;
	} else if (!strncmp(bound, "shm:", 4)) {
		n = snprintf(sa->sun_path + 1, sizeof sa->sun_path - 1, "libipc-shm/%s", bound + 4);
	} else {
		n = snprintf(sa->sun_path + 1, sizeof sa->sun_path - 1, "libipc-mq:%s", bound + 3);
	}
	CHECKF(n > 0 && (size_t)n < sizeof sa->sun_path - 1, "%s", bound);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* A child that becomes nobody and connects and closes until killed (or
 * its alarm: the old code's stalled accept then returns, and fails). */
static pid_t flooder(const struct sockaddr_un *sa, socklen_t sl, int type)
{
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid)
		return pid;
	alarm(FLOOD_MAX_MS / 1000 + 2);
	if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
		_exit(200);
	for (;;) {
		int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
		if (fd < 0)
			_exit(201);
		(void)!connect(fd, (const struct sockaddr *)sa, sl);
		close(fd);
	}
}

/* Wall-clock and CPU time of this thread, in ms. */
struct clock {
	int64_t wall, cpu;
};

static int64_t thread_cpu_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct clock clock_start(void)
{
	return (struct clock){t_now_ms(), thread_cpu_ms()};
}

/* Raise *wall and *cpu to what passed since c if more. */
static void clock_stop(struct clock c, int64_t *wall, int64_t *cpu)
{
	int64_t w = t_now_ms() - c.wall, u = thread_cpu_ms() - c.cpu;
	*wall = w > *wall ? w : *wall;
	*cpu = u > *cpu ? u : *cpu;
}

struct honest {
	const char *bound;
	int err;     /* 0 once connected and its message sent */
	int64_t ms;  /* how long the connect took */
};

static void *honest_client(void *arg)
{
	struct honest *h = arg;
	struct ipc_options o;
	ipc_options_init(&o);
	o.connect_timeout_ms = FLOOD_MAX_MS / 2;
	int64_t t0 = t_now_ms();
	ipc_conn *c = ipc_connect(h->bound, &o);
	h->ms = t_now_ms() - t0;
	if (!c) {
		h->err = errno ? errno : -1;
		return NULL;
	}
	h->err = ipc_send(c, "hi", 2, 0) == 2 ? 0 : errno;
	ipc_close(c); /* lingers until the server has it */
	return NULL;
}

CTEST(listener_refused_flood)
{
	if (t_is_inet(scheme))
		SKIP("not applicable: tcp and tls have no uid-based access control");
	if (geteuid() != 0)
		SKIP("needs root to run the flooders as another uid (nobody)");
	if (!strcmp(scheme, "mq"))
		t_need_mqdir();
	TEST_TIMEOUT(40);
	struct ipc_options o;
	ipc_options_init(&o);
	o.recv_timeout_ms = 100; /* ipc_accept(l, 0) is the timed accept */
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l;
	if (!strcmp(scheme, "unix")) { /* a path is refused by the kernel itself */
		char a[IPC_ADDR_MAX + 1];
		snprintf(a, sizeof a, "unix:@ipct-flood-%d-%s", (int)getpid(), t_token());
		l = ipc_listen(a, &o);
		CHECKF(l != NULL, "ipc_listen(%s)", a);
		CHECK_GT(ipc_listener_addr(l, bound, sizeof bound), 0);
	} else {
		l = t_listen(scheme, &o, bound);
	}
	struct sockaddr_un sa;
	int type;
	socklen_t sl = flood_addr(bound, &sa, &type);
	pid_t kids[FLOODERS];
	for (int k = 0; k < FLOODERS; k++)
		kids[k] = flooder(&sa, sl, type);
	t_sleep_ms(200); /* let the kernel's queue fill */

	struct honest h = {.bound = bound, .err = -1};
	pthread_t th;
	int started = 0;
	int64_t t0 = t_now_ms(), honest_at = -1;
	int64_t wall[3] = {0, 0, 0}, cpu[3] = {0, 0, 0}; /* max ms: non-blocking, timed, poll */
	int rounds = 0;
	while (t_now_ms() - t0 < FLOOD_MS || (honest_at < 0 && t_now_ms() - t0 < FLOOD_MAX_MS)) {
		if (!started && t_now_ms() - t0 >= 100) {
			CHECK_EQ(pthread_create(&th, NULL, honest_client, &h), 0);
			started = 1;
		}
		ipc_conn *c[3];
		struct clock c0 = clock_start();
		c[0] = ipc_accept(l, IPC_DONTWAIT);
		clock_stop(c0, &wall[0], &cpu[0]);
		CHECKF(c[0] || errno == EAGAIN, "non-blocking accept: %s", strerror(errno));

		c0 = clock_start();
		c[1] = ipc_accept(l, 0);
		clock_stop(c0, &wall[1], &cpu[1]);
		CHECKF(c[1] || errno == ETIMEDOUT, "timed accept: %s", strerror(errno));

		struct ipc_pollitem it = {.listener = l, .events = IPC_POLLIN};
		c0 = clock_start();
		int pr = ipc_poll(&it, 1, 100);
		clock_stop(c0, &wall[2], &cpu[2]);
		CHECK(pr >= 0);
		c[2] = pr ? ipc_accept(l, IPC_DONTWAIT) : NULL;
		for (int i = 0; i < 3; i++) {
			if (!c[i])
				continue;
			char b[8]; /* only the honest one gets in */
			struct ipc_pollitem ci = {.conn = c[i], .events = IPC_POLLIN};
			CHECK_EQ(ipc_poll(&ci, 1, 5000), 1);
			CHECK_EQ(ipc_recv(c[i], b, sizeof b, IPC_DONTWAIT), 2);
			if (honest_at < 0)
				honest_at = t_now_ms() - t0;
			ipc_close(c[i]);
		}
		rounds++;
	}
	int64_t flood_ms = t_now_ms() - t0;
	for (int k = 0; k < FLOODERS; k++)
		kill(kids[k], SIGKILL);
	for (int k = 0; k < FLOODERS; k++)
		t_wait(kids[k]);
	if (started)
		pthread_join(th, NULL);
	static const char *const what[3] = {"ipc_accept(IPC_DONTWAIT)", "ipc_accept (100 ms timeout)",
					    "ipc_poll(listener, 100 ms)"};
	printf("%s: %d rounds in %lld ms; honest client connected in %lld ms, accepted at %lld ms\n", scheme,
	       rounds, (long long)flood_ms, (long long)h.ms, (long long)honest_at);
	for (int i = 0; i < 3; i++)
		printf("  %-28s max %lld ms wall, %lld ms cpu\n", what[i], (long long)wall[i], (long long)cpu[i]);
	for (int i = 0; i < 3; i++)
		CHECKF(cpu[i] <= CPU_MAX_MS, "%s spent %lld ms of CPU (%lld ms wall) under the flood", what[i],
		       (long long)cpu[i], (long long)wall[i]);
	CHECKF(started && h.err == 0, "honest client: %s after %lld ms", strerror(h.err), (long long)h.ms);
	CHECKF(honest_at >= 0, "the honest client was not accepted during the %lld ms flood", (long long)flood_ms);
	CHECK_EQ(ipc_listener_close(l), 0);
}

/* Refused peers queued in the kernel past one accept batch, then nothing
 * new: a loop on an edge-triggered epoll of the listener's descriptor,
 * following ipc_listener_fd(3) (ready? accept until EAGAIN : wait), still
 * comes back until it reaches the honest client queued behind them. */
CTEST(listener_refused_backlog_edge)
{
	if (t_is_inet(scheme))
		SKIP("not applicable: tcp and tls have no uid-based access control");
	if (geteuid() != 0)
		SKIP("needs root to run the refused peers as another uid (nobody)");
	if (!strcmp(scheme, "mq"))
		t_need_mqdir();
	TEST_TIMEOUT(30);
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l;
	if (!strcmp(scheme, "unix")) {
		char a[IPC_ADDR_MAX + 1];
		snprintf(a, sizeof a, "unix:@ipct-edge-%d-%s", (int)getpid(), t_token());
		l = ipc_listen(a, NULL);
		CHECKF(l != NULL, "ipc_listen(%s)", a);
		CHECK_GT(ipc_listener_addr(l, bound, sizeof bound), 0);
	} else {
		l = t_listen(scheme, NULL, bound);
	}
	struct sockaddr_un sa;
	int type;
	socklen_t sl = flood_addr(bound, &sa, &type);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) { /* 5 batches of refused peers, each closed at once */
		if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
			_exit(200);
		for (int i = 0; i < 5 * 64; i++) {
			int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
			if (fd < 0 || connect(fd, (const struct sockaddr *)&sa, sl) < 0)
				_exit(201);
			close(fd);
		}
		_exit(0);
	}
	CHECK_EQ(t_wait(pid), 0);
	struct honest h = {.bound = bound, .err = -1};
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, honest_client, &h), 0);
	t_sleep_ms(100); /* queued behind them */

	int ep = epoll_create1(EPOLL_CLOEXEC);
	CHECK(ep >= 0);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET};
	CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, ipc_listener_fd(l), &ev), 0);
	ipc_conn *c = NULL;
	int waits = 0;
	int64_t t0 = t_now_ms();
	while (!c) {
		short pev;
		if (ipc_listener_ready(l, IPC_POLLIN, &pev)) {
			while (!c && (c = ipc_accept(l, IPC_DONTWAIT)) == NULL)
				CHECKF(errno == EAGAIN, "accept: %s", strerror(errno));
			continue;
		}
		int r = epoll_wait(ep, &ev, 1, 5000);
		CHECKF(r == 1, "the edge-triggered wait stalled after %d waits (%lld ms) with the honest client queued",
		       waits, (long long)(t_now_ms() - t0));
		waits++;
	}
	printf("%s: honest client accepted after %d edge-triggered waits, %lld ms\n", scheme, waits,
	       (long long)(t_now_ms() - t0));
	char b[8];
	struct ipc_pollitem ci = {.conn = c, .events = IPC_POLLIN};
	CHECK_EQ(ipc_poll(&ci, 1, 5000), 1);
	CHECK_EQ(ipc_recv(c, b, sizeof b, IPC_DONTWAIT), 2);
	ipc_close(c);
	pthread_join(th, NULL);
	CHECKF(h.err == 0, "honest client: %s", strerror(h.err));
	close(ep);
	CHECK_EQ(ipc_listener_close(l), 0);
}
