/* test_mq_hostile.c - mq:/name against hostile or unlucky local peers
 * (issue 10): a peer that flips O_NONBLOCK on the queue descriptions it
 * shares with us (row 4), another uid watching the queue namespace (row 7),
 * SIGKILL inside connect leaving a queue name (row 8). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <mqueue.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define MQDIR "/dev/mqueue"
#define NOBODY 65534


/* Set (or clear) O_NONBLOCK on every mqueue descriptor of this process:
 * what a peer can do to the open file descriptions it shares with us. */
static int flip_all_queues(int set)
{
	int n = 0;
	for (int fd = 3; fd < 1024; fd++) {
		struct mq_attr a, old;
		if (mq_getattr(fd, &a) < 0)
			continue;
		a.mq_flags = set ? O_NONBLOCK : 0;
		if (mq_setattr(fd, &a, &old) == 0)
			n++;
	}
	return n;
}

static void row4(int set)
{
	TEST_TIMEOUT(30);
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("mq", NULL, bound);
	int up[2], down[2];
	CHECK(pipe(up) == 0 && pipe(down) == 0);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		ipc_conn *c = ipc_connect(bound, NULL);
		if (!c || ipc_send(c, "hi", 2, 0) != 2) {
			fprintf(stderr, "peer: %s: %s\n", c ? "send" : "connect", strerror(errno));
			_exit(2);
		}
		char b;
		if (read(down[0], &b, 1) != 1) /* flip once accepted */
			_exit(3);
		b = flip_all_queues(set) >= 2 ? 'r' : 'x';
		if (write(up[1], &b, 1) != 1 || read(down[0], &b, 1) < 0)
			_exit(3);
		if (b == 'm') { /* one message, then exit without closing */
			if (ipc_send(c, "late", 4, 0) != 4)
				_exit(4);
			flip_all_queues(!set);
			flip_all_queues(set);
			if (read(down[0], &b, 1) < 0)
				_exit(5);
		}
		_exit(0); /* the peer exits: a death, not an orderly close */
	}
	struct ipc_pollitem li = {.listener = l, .events = IPC_POLLIN};
	int lr = ipc_poll(&li, 1, 10000);
	int st = 0;
	pid_t w = waitpid(pid, &st, WNOHANG);
	CHECKF(lr == 1, "no connection: child %d status %#x", (int)w, st);
	ipc_conn *s = ipc_accept(l, IPC_DONTWAIT);
	CHECK(s != NULL);
	char b[64];
	CHECK(ipc_conn_set_timeouts(s, -1, 5000) == 0);
	CHECK(ipc_recv(s, b, sizeof b, 0) == 2);
	CHECK(write(down[1], "f", 1) == 1);
	char r;
	CHECK(read(up[0], &r, 1) == 1);
	CHECKF(r == 'r', "the peer could not flip its queue flags (%c)", r);

	/* peer alive: non-blocking calls never wait, timed ones time out */
	int64_t t0 = t_now_ms();
	CHECK_FAILS(ipc_recv(s, b, sizeof b, IPC_DONTWAIT), EAGAIN);
	CHECKF(t_now_ms() - t0 < 500, "DONTWAIT recv took %lld ms", (long long)(t_now_ms() - t0));
	struct ipc_pollitem it = {.conn = s, .events = IPC_POLLIN};
	t0 = t_now_ms();
	int pr = ipc_poll(&it, 1, 300);
	int64_t dt = t_now_ms() - t0;
	CHECKF(pr == 0, "ipc_poll: %d (revents %#x)", pr, it.revents);
	CHECKF(dt >= 250 && dt < 1500, "ipc_poll(300 ms) took %lld ms", (long long)dt);
	CHECK(ipc_conn_set_timeouts(s, 200, 200) == 0);
	t0 = t_now_ms();
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), ETIMEDOUT); /* not a sticky EAGAIN */
	CHECKF(t_now_ms() - t0 < 1500, "timed recv took %lld ms", (long long)(t_now_ms() - t0));
	/* a message still arrives, through a blocking receive */
	CHECK(write(down[1], "m", 1) == 1);
	CHECK(ipc_conn_set_timeouts(s, 200, 5000) == 0);
	CHECK(ipc_recv(s, b, sizeof b, 0) == 4 && !memcmp(b, "late", 4));
	/* fill the peer's queue: DONTWAIT sends never block, then hold, then EAGAIN */
	int sent = 0;
	t0 = t_now_ms();
	while (sent < 1000 && ipc_send(s, b, 64, IPC_DONTWAIT) == 64)
		sent++;
	CHECKF(sent < 1000 && errno == EAGAIN, "%d sends, errno %d", sent, errno);
	CHECK_FAILS(ipc_send(s, b, 64, 0), ETIMEDOUT); /* timed: still held */
	CHECKF(t_now_ms() - t0 < 2000, "sends took %lld ms", (long long)(t_now_ms() - t0));

	/* the peer exits: everything ends, within bounds */
	CHECK(write(down[1], "q", 1) == 1);
	t_wait_ok(pid);
	CHECK(ipc_conn_set_timeouts(s, -1, -1) == 0);
	t0 = t_now_ms();
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), ECONNRESET);
	CHECKF(t_now_ms() - t0 < 1000, "death seen after %lld ms", (long long)(t_now_ms() - t0));
	t0 = t_now_ms();
	CHECK(ipc_close(s) == 0 || errno == EPIPE || errno == ECONNRESET);
	CHECKF(t_now_ms() - t0 < 1000, "close took %lld ms", (long long)(t_now_ms() - t0));
	ipc_listener_close(l);
}

/* Issue 10 row 4: the peer clears O_NONBLOCK on the shared queues. */
TEST(hostile_row4_mq_setattr_clear)
{
	row4(0);
}

/* Issue 10 row 4: the peer sets O_NONBLOCK on the shared queues. */
TEST(hostile_row4_mq_setattr_set)
{
	row4(1);
}

/* Issue 10 row 7: another uid watches the queue namespace while clients
 * connect with mode 0666; it must never open a connection's queue. */
TEST(hostile_row7_queue_name)
{
	TEST_TIMEOUT(60);
	if (geteuid() != 0)
		SKIP("needs root to run a watcher as another uid");
	t_need_mqdir();
	struct ipc_options o;
	ipc_options_init(&o);
	o.mode = 0666;
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("mq", &o, bound);
	int rep[2], go[2];
	CHECK(pipe(rep) == 0 && pipe(go) == 0);
	char prefix[64]; /* only our queues: other tests may run as nobody */
	snprintf(prefix, sizeof prefix, "libipc-mq.%d.", (int)getpid());
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
			_exit(2);
		int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
		if (in < 0 || inotify_add_watch(in, MQDIR, IN_CREATE) < 0)
			_exit(3);
		char c = 'w';
		if (write(go[1], &c, 1) != 1)
			_exit(4);
		for (;;) { /* until killed: open whatever appears */
			char buf[4096] __attribute__((aligned(8)));
			ssize_t n = read(in, buf, sizeof buf);
			for (ssize_t off = 0; n > 0 && off < n;) {
				struct inotify_event *ev = (struct inotify_event *)(buf + off);
				if (ev->len && !strncmp(ev->name, prefix, strlen(prefix))) {
					char name[300];
					snprintf(name, sizeof name, "/%s", ev->name);
					mqd_t q = mq_open(name, O_RDONLY | O_NONBLOCK);
					if (q != (mqd_t)-1) {
						mq_close(q);
						if (write(rep[1], "o", 1) != 1)
							_exit(5);
					} else if (write(rep[1], "s", 1) != 1) {
						_exit(5);
					}
				}
				off += (ssize_t)sizeof *ev + ev->len;
			}
			if (n < 0) {
				struct pollfd p = {.fd = in, .events = POLLIN};
				poll(&p, 1, 100);
			}
		}
	}
	char c;
	CHECK(read(go[0], &c, 1) == 1);
	for (int i = 0; i < 300; i++) {
		ipc_conn *k = ipc_connect(bound, &o);
		CHECK(k != NULL);
		ipc_conn *s = t_accept(l);
		CHECK(ipc_send(k, "secret", 6, 0) == 6);
		char b[8];
		CHECK(ipc_recv(s, b, sizeof b, 0) == 6);
		ipc_close(k);
		ipc_close(s);
	}
	t_sleep_ms(100);
	kill(pid, SIGKILL);
	t_wait(pid);
	close(rep[1]);
	int opened = 0, seen = 0;
	while (read(rep[0], &c, 1) == 1) {
		opened += c == 'o';
		seen += c == 's';
	}
	CHECKF(opened == 0, "the other uid opened %d queues", opened);
	CHECKF(seen > 0, "the watcher saw no queue name: the test proves nothing");
	ipc_listener_close(l);
}

/* A queue name as a process killed inside connect leaves it. */
static void make_leftover(char *name, size_t cap, pid_t pid)
{
	snprintf(name, cap, "/libipc-mq.%d.%016llx", (int)pid, (unsigned long long)(0x1234567890abcdefULL ^ (unsigned)rand()));
	struct mq_attr a = {.mq_maxmsg = 2, .mq_msgsize = 128};
	mqd_t q = mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, &a);
	CHECKF(q != (mqd_t)-1, "mq_open %s", name);
	mq_close(q);
}

static int name_exists(const char *name)
{
	char path[320];
	snprintf(path, sizeof path, MQDIR "%s", name);
	return access(path, F_OK) == 0;
}

static pid_t dead_pid(void)
{
	pid_t p = fork();
	CHECK(p >= 0);
	if (p == 0)
		_exit(0);
	t_wait(p);
	return p;
}

/* Names of our prefix left by one of the pids in killed[0..n). */
static int leftovers_of(const pid_t *killed, int n)
{
	int left = 0;
	DIR *d = opendir(MQDIR);
	if (!d)
		return 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		int pid;
		if (sscanf(de->d_name, "libipc-mq.%d.", &pid) != 1)
			continue;
		for (int i = 0; i < n; i++)
			left += killed[i] == pid;
	}
	closedir(d);
	return left;
}

struct drain {
	ipc_listener *l;
	atomic_int stop;
};

/* Accept and close whatever arrives: connections in flight hold queues
 * (and the user's queue budget, shared with other tests) until accepted. */
static void *drain_fn(void *arg)
{
	struct drain *d = arg;
	while (!d->stop) {
		ipc_conn *s = ipc_accept(d->l, 0);
		if (s)
			ipc_close(s);
	}
	return NULL;
}

/* Issue 10 row 8: names left by a SIGKILL inside connect are reaped by
 * the next listen or connect; live pids and other uids are left alone. */
TEST(hostile_row8_kill_during_connect)
{
	TEST_TIMEOUT(60);
	t_need_mqdir();
	srand((unsigned)getpid());
	char a[128], b[128], mine[128], other[128] = "";
	make_leftover(a, sizeof a, dead_pid());
	make_leftover(mine, sizeof mine, getpid()); /* alive: kept */
	if (geteuid() == 0) { /* another uid's, even for a dead pid: kept */
		make_leftover(other, sizeof other, dead_pid());
		char path[320];
		snprintf(path, sizeof path, MQDIR "%s", other);
		CHECK(chown(path, NOBODY, NOBODY) == 0);
	}
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("mq", NULL, bound);
	CHECKF(!name_exists(a), "%s survived a listen", a);
	CHECK(name_exists(mine));
	if (*other)
		CHECK(name_exists(other));
	make_leftover(b, sizeof b, dead_pid());
	ipc_conn *c = ipc_connect(bound, NULL);
	CHECK(c != NULL);
	CHECKF(!name_exists(b), "%s survived a connect", b);
	ipc_close(c);
	ipc_close(t_accept(l));
	mq_unlink(mine);
	if (*other)
		mq_unlink(other);

	/* real kills at random moments of a connect loop */
	enum { ROUNDS = 150, SOAK_ROUNDS = 2000 };
	static pid_t killed[SOAK_ROUNDS];
	int rounds = getenv("IPC_SOAK") ? SOAK_ROUNDS : ROUNDS;
	struct ipc_options ao;
	ipc_options_init(&ao);
	ao.recv_timeout_ms = 50; /* the drain thread's accept */
	ipc_listener_close(l);
	l = t_listen("mq", &ao, bound);
	struct drain dr = {l, 0};
	atomic_init(&dr.stop, 0);
	pthread_t th;
	CHECK(pthread_create(&th, NULL, drain_fn, &dr) == 0);
	for (int i = 0; i < rounds; i++) {
		fflush(NULL);
		pid_t p = fork();
		CHECK(p >= 0);
		if (p == 0) { /* one connect: at most one in flight per round */
			ipc_conn *k = ipc_connect(bound, NULL);
			if (k)
				ipc_close(k);
			pause();
		}
		struct timespec ts = {0, (long)(rand() % 800) * 1000}; /* lands anywhere in connect */
		nanosleep(&ts, NULL);
		kill(p, SIGKILL);
		t_wait(p);
		killed[i] = p;
	}
	dr.stop = 1;
	CHECK(pthread_join(th, NULL) == 0);
	c = ipc_connect(bound, NULL);
	CHECK(c != NULL);
	int left = leftovers_of(killed, rounds);
	CHECKF(left == 0, "%d names of killed clients left", left);
	ipc_close(c);
	ipc_listener_close(l);
}
