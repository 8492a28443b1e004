/* test_faults.c - faults on every backend: SIGKILL of either side at random
 * points of a long transfer, descriptor and memory exhaustion (in forked
 * children with lowered limits), and blocking calls hit by signals.
 * IPC_SOAK=1 scales the repetitions up. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

static void usleep_(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Mixed sizes: mostly small, some over a page, some over the capacity. */
static size_t msg_size(uint64_t seq)
{
	if (seq % 16 == 5)
		return 100000 + (size_t)(seq % 1000);
	if (seq % 4 == 1)
		return 5000 + (size_t)(seq * 37 % 3000);
	return (size_t)(seq * 13 % 200);
}

static void leftovers(const char *what)
{
	int shm = t_token_entries("/dev/shm"), mq = t_token_entries("/dev/mqueue");
	CHECKF(shm == 0 && mq == 0, "%s: %d objects left in /dev/shm, %d in /dev/mqueue", what, shm, mq);
}

struct shared {
	volatile long progress; /* messages the child has handled */
	volatile long corrupt;  /* seq + 1 of a bad message the child saw */
};

/* The child's side of one iteration; never returns. */
static void kill_child(const char *scheme, int sender, int listener, const char *addr, int pfd,
		       struct shared *sh)
{
	struct ipc_options o;
	ipc_options_init(&o);
	ipc_conn *c;
	if (listener) {
		ipc_listener *l = ipc_listen(addr, &o);
		char bound[IPC_ADDR_MAX + 1];
		if (!l || ipc_listener_addr(l, bound, sizeof bound) < 0)
			_exit(2);
		if (write(pfd, bound, strlen(bound) + 1) < 0)
			_exit(2);
		c = ipc_accept(l, 0);
		ipc_listener_close(l);
	} else {
		c = ipc_connect(addr, &o);
	}
	if (!c)
		_exit(2);
	unsigned char *buf = malloc(200000);
	if (!buf)
		_exit(2);
	for (uint64_t seq = 0;; seq++) {
		size_t n = msg_size(seq);
		if (sender) {
			t_fill(buf, n, seq);
			if (ipc_send(c, buf, n, 0) != (ssize_t)n)
				_exit(0);
		} else {
			ssize_t r = ipc_recv(c, buf, 200000, 0);
			if (r < 0)
				_exit(0);
			if ((size_t)r != n || !t_verify(buf, n, seq)) {
				sh->corrupt = (long)seq + 1;
				_exit(3);
			}
		}
		sh->progress = (long)seq + 1;
	}
}

/* SIGKILL either side (child connects or listens; child sends or
 * receives) at random points; the survivor gets only whole verified
 * messages, then EPIPE/ECONNRESET within the bound; nothing is left. */
CTEST(faults_sigkill)
{
	int iters = getenv("IPC_SOAK") ? 1000 : 200;
	TEST_TIMEOUT(getenv("IPC_SOAK") ? 1800 : 120);
	const int64_t bound_ms = 5000;
	struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(sh != MAP_FAILED);
	struct ipc_options o;
	ipc_options_init(&o);
	o.recv_timeout_ms = 10000; /* far above the bound: reaching it is a hang */
	o.send_timeout_ms = 10000;
	o.connect_timeout_ms = 3000;
	int fd0 = t_fd_count();
	char laddr[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, &o, laddr);
	unsigned seed = (unsigned)getpid();
	unsigned char *buf = malloc(200000);
	CHECK(buf != NULL);
	int64_t worst = 0, total_ms = 0;
	long kills = 0, msgs = 0, early = 0, detected = 0;
	for (int it = 0; it < iters; it++) {
		int child_sends = it & 1, child_listens = (it >> 1) & 1;
		int target = rand_r(&seed) % 41; /* messages before the kill */
		if (child_listens && rand_r(&seed) % 8 == 0)
			target = -1; /* kill during listen / accept / handshake */
		memset((void *)sh, 0, sizeof *sh);
		const char *addr = child_listens ? t_addr(scheme) : laddr;
		int p[2];
		CHECK(pipe2(p, O_CLOEXEC) == 0);
		fflush(NULL);
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			alarm(60);
			kill_child(scheme, child_sends, child_listens, addr, p[1], sh);
		}
		close(p[1]);
		if (target < 0) {
			usleep_(rand_r(&seed) % 3000);
			kill(pid, SIGKILL);
			early++;
		}
		ipc_conn *c = NULL;
		if (child_listens) {
			char bound[IPC_ADDR_MAX + 1];
			size_t got = 0;
			for (;;) {
				struct pollfd pf = {.fd = p[0], .events = POLLIN};
				CHECK(poll(&pf, 1, 10000) == 1);
				ssize_t r = read(p[0], bound + got, sizeof bound - got);
				if (r <= 0)
					break;
				got += (size_t)r;
				if (bound[got - 1] == '\0')
					break;
			}
			if (got && bound[got - 1] == '\0') {
				c = ipc_connect(bound, &o);
				if (!c)
					CHECKF(target < 0, "connect to live child at %s", bound);
			} else {
				CHECKF(target < 0, "child listener failed");
			}
		} else {
			c = ipc_accept(l, 0);
			CHECKF(c != NULL, "accept (iteration %d)", it);
		}
		close(p[0]);
		int64_t tk = 0;
		if (c) {
			uint64_t seq = 0;
			for (;; seq++) {
				if (!tk && target >= 0 && (long)seq >= target) {
					if (child_sends)
						usleep_(rand_r(&seed) % 2000);
					kill(pid, SIGKILL);
					tk = t_now_ms();
				}
				size_t n = msg_size(seq);
				errno = 0;
				if (child_sends) {
					ssize_t r = ipc_recv(c, buf, 200000, 0);
					if (r < 0)
						break;
					CHECKF((size_t)r == n && t_verify(buf, n, seq),
					       "iteration %d: message %llu corrupt (%zd bytes, want %zu)", it,
					       (unsigned long long)seq, r, n);
					msgs++;
				} else {
					t_fill(buf, n, seq);
					if (ipc_send(c, buf, n, 0) < 0)
						break;
				}
			}
			int e = errno;
			int64_t now = t_now_ms();
			CHECKF(tk || target < 0, "iteration %d: connection failed before the kill (errno %d)", it, e);
			CHECKF(e == EPIPE || e == ECONNRESET, "iteration %d: ended with errno %d (%s)", it, e,
			       strerror(e));
			if (tk) {
				CHECKF(now - tk <= bound_ms, "iteration %d: death noticed after %lld ms", it,
				       (long long)(now - tk));
				worst = now - tk > worst ? now - tk : worst;
				total_ms += now - tk;
				detected++;
			}
			ipc_close(c);
		}
		int st = t_wait(pid);
		CHECKF(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "iteration %d: child status %#x", it, st);
		CHECKF(sh->corrupt == 0, "iteration %d: the child received a corrupt message %ld", it,
		       sh->corrupt - 1);
		if (!child_sends)
			msgs += sh->progress;
		kills++;
		leftovers("after a kill");
	}
	CHECK(ipc_listener_close(l) == 0);
	free(buf);
	leftovers("at the end");
	CHECKF(t_fd_count() == fd0, "descriptors: %d before, %d after", fd0, t_fd_count());
	printf("FIGURE faults_sigkill[%s]: %ld kills (%ld early), %ld verified messages, death noticed in "
	       "%lld ms worst, %.1f ms mean\n",
	       scheme, kills, early, msgs, (long long)worst, detected ? (double)total_ms / (double)detected : 0.0);
}

static void round_trip(ipc_conn *a, ipc_conn *b)
{
	char buf[64];
	CHECK(ipc_send(a, "ping", 4, 0) == 4);
	CHECK(ipc_recv(b, buf, sizeof buf, 0) == 4 && !memcmp(buf, "ping", 4));
	CHECK(ipc_send(b, "pong", 4, 0) == 4);
	CHECK(ipc_recv(a, buf, sizeof buf, 0) == 4 && !memcmp(buf, "pong", 4));
}

static int highest_fd(void)
{
	int hi = 0;
	for (int fd = 0; fd < 65536; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			hi = fd;
	return hi;
}

static int fd_err_ok(int e)
{
	return e == EMFILE || e == ENFILE;
}

/* RLIMIT_NOFILE lowered (in a child): listen, connect and accept fail with
 * EMFILE/ENFILE; existing connections keep working; once descriptors are
 * free again everything works and nothing leaked. */
CTEST(faults_fd_exhaustion)
{
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid) {
		t_wait_ok(pid);
		leftovers("after fd exhaustion");
		return;
	}
	struct ipc_options o;
	ipc_options_init(&o);
	o.recv_timeout_ms = 3000;
	o.connect_timeout_ms = 3000;
	int fd0 = t_fd_count();
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, &o, bound);
	ipc_conn *bs, *bc;
	t_pair(scheme, &o, &bs, &bc);
	struct rlimit old, rl;
	CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
	rl = old;
	rl.rlim_cur = (rlim_t)highest_fd() + 1 + 6;
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	enum { MAXC = 200 };
	ipc_conn *cs[MAXC], *ss[MAXC], *pending = NULL;
	int n = 0, failed_at = -1, err = 0;
	for (; n < MAXC; n++) {
		cs[n] = ipc_connect(bound, &o);
		if (!cs[n]) {
			err = errno;
			failed_at = 0;
			break;
		}
		ss[n] = ipc_accept(l, 0);
		if (!ss[n]) {
			err = errno;
			failed_at = 1;
			pending = cs[n];
			break;
		}
	}
	CHECKF(n < MAXC, "no failure with RLIMIT_NOFILE at %llu", (unsigned long long)rl.rlim_cur);
	CHECKF(fd_err_ok(err), "%s failed with errno %d (%s), want EMFILE/ENFILE", failed_at ? "accept" : "connect",
	       err, strerror(err));
	ipc_listener *l2 = ipc_listen(t_addr(scheme), &o);
	CHECKF(l2 || fd_err_ok(errno) || errno == ENOMEM, "listen at the limit: errno %d", errno);
	if (l2)
		ipc_listener_close(l2);
	round_trip(bc, bs); /* what exists keeps working */
	printf("%d connections at the limit, then %s: %s\n", n, failed_at ? "accept" : "connect", strerror(err));
	CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
	if (pending) {
		/* the client whose accept failed: it is accepted now, or (if the
		 * backend dropped it) it learns so instead of hanging */
		ipc_conn *s = ipc_accept(l, 0);
		if (s) {
			round_trip(pending, s);
			ipc_close(s);
		} else {
			char b[8];
			CHECKF(errno == ETIMEDOUT, "accept after the limit was raised: errno %d", errno);
			CHECK_FAILS(ipc_recv(pending, b, sizeof b, 0), ECONNRESET);
		}
		ipc_close(pending);
	}
	ipc_conn *s2, *c2;
	t_pair(scheme, &o, &s2, &c2);
	round_trip(c2, s2);
	ipc_close(s2);
	ipc_close(c2);
	for (int i = 0; i < n; i++) {
		ipc_close(cs[i]);
		ipc_close(ss[i]);
	}
	ipc_close(bs);
	ipc_close(bc);
	ipc_listener_close(l);
	CHECKF(t_fd_count() == fd0, "descriptors: %d before, %d after", fd0, t_fd_count());
	_exit(0);
}

static long vmsize_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	CHECK(f != NULL);
	char line[256];
	long v = -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmSize: %ld kB", &v) == 1)
			break;
	fclose(f);
	return v;
}

static void set_as(rlim_t bytes)
{
	struct rlimit rl;
	CHECK(getrlimit(RLIMIT_AS, &rl) == 0);
	rl.rlim_cur = bytes;
	CHECK(setrlimit(RLIMIT_AS, &rl) == 0);
}

/* RLIMIT_AS lowered (in a child): a 32 MiB message cannot be allocated, so
 * the receive fails with ENOMEM and the message stays queued; once memory
 * is back it is delivered whole.  Listen/connect under a tight limit fail
 * cleanly or work. */
CTEST(faults_mem_exhaustion)
{
	if (*t_env("IPC_SAN"))
		SKIP("RLIMIT_AS cannot be lowered under sanitizers (they reserve terabytes of address space)");
	const size_t big = (size_t)32 << 20;
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	fflush(NULL);
	pid_t sender = fork();
	CHECK(sender >= 0);
	if (sender == 0) {
		char *m = malloc(big);
		if (!m)
			_exit(2);
		t_fill(m, big, 99);
		_exit(ipc_send(c, m, big, 0) == (ssize_t)big ? 0 : 1);
	}
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid) {
		t_wait_ok(pid);
		t_wait_ok(sender);
		return;
	}
	/* the child receives; it never touches c (the sender's handle) */
	void *m = NULL;
	long vs = vmsize_kib();
	struct rlimit old;
	CHECK(getrlimit(RLIMIT_AS, &old) == 0);
	set_as((rlim_t)(vs + 16 * 1024) * 1024);
	errno = 0;
	ssize_t r = ipc_recv_alloc(s, &m, 0);
	int e = errno;
	CHECK(setrlimit(RLIMIT_AS, &old) == 0);
	CHECKF(r == -1 && e == ENOMEM, "recv_alloc of 32 MiB under a 16 MiB margin: %zd, errno %d", r, e);
	CHECK(m == NULL);
	r = ipc_recv_alloc(s, &m, 0);
	CHECKF(r == (ssize_t)big, "after the limit was raised: %zd", r);
	CHECK(t_verify(m, big, 99));
	free(m);
	/* connect / listen with almost no memory: clean errors or success */
	int ok = 0, nomem = 0;
	for (int i = 0; i < 40; i++) {
		vs = vmsize_kib();
		set_as((rlim_t)(vs + 32 * (i % 8)) * 1024);
		ipc_listener *l = ipc_listen(t_addr(scheme), NULL);
		int le = errno;
		if (l) {
			char bound[IPC_ADDR_MAX + 1];
			ipc_conn *x = ipc_listener_addr(l, bound, sizeof bound) > 0 ? ipc_connect(bound, NULL) : NULL;
			int ce = errno;
			if (x) {
				ok++;
				ipc_close(x);
			} else {
				CHECKF(ce == ENOMEM || ce == EAGAIN, "connect: errno %d (%s)", ce, strerror(ce));
				nomem++;
			}
			ipc_listener_close(l);
		} else {
			CHECKF(le == ENOMEM || le == EAGAIN, "listen: errno %d (%s)", le, strerror(le));
			nomem++;
		}
		CHECK(setrlimit(RLIMIT_AS, &old) == 0);
	}
	printf("tight memory: %d worked, %d failed with ENOMEM/EAGAIN\n", ok, nomem);
	_exit(0);
}

/* ---- signals ---------------------------------------------------------- */

static volatile sig_atomic_t sig_count;
static void on_usr1(int sig)
{
	(void)sig;
	sig_count++;
}

struct pest {
	pthread_t target;
	int stop; /* atomic */
};

static void *pest_main(void *arg)
{
	struct pest *p = arg;
	while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
		pthread_kill(p->target, SIGUSR1);
		usleep_(1000);
	}
	return NULL;
}

struct later {
	const char *what;
	ipc_conn *c;
	const char *addr;
	ipc_conn *made;
};

static void *later_main(void *arg)
{
	struct later *l = arg;
	usleep_(300000);
	if (!strcmp(l->what, "send")) {
		ipc_send(l->c, "late", 4, 0);
	} else if (!strcmp(l->what, "connect")) {
		l->made = ipc_connect(l->addr, NULL);
	} else { /* drain: receive everything that is waiting */
		static char b[70000];
		while (ipc_recv(l->c, b, sizeof b, 0) >= 0)
			;
	}
	return NULL;
}

/* Blocking calls under a storm of signals whose handler does not restart
 * system calls: they never fail with EINTR, still complete, and timeouts
 * bound the whole call. */
CTEST(faults_signals)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = 0; /* no SA_RESTART */
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	struct pest pest = {.target = pthread_self()};
	pthread_t pt, lt;
	char bound[IPC_ADDR_MAX + 1], buf[64];
	ipc_listener *l = t_listen(scheme, NULL, bound);
	ipc_conn *c = ipc_connect(bound, NULL);
	CHECK(c != NULL);
	ipc_conn *s = ipc_accept(l, 0);
	CHECK(s != NULL);
	/* the helper threads must not take the signals */
	sigset_t blk, old;
	sigemptyset(&blk);
	sigaddset(&blk, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &blk, &old);
	CHECK(pthread_create(&pt, NULL, pest_main, &pest) == 0);
	struct later lat = {.what = "send", .c = c};
	CHECK(pthread_create(&lt, NULL, later_main, &lat) == 0);
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	printf("step: 1. blocking receive\n");
	/* 1. blocking receive: returns the message, not EINTR */
	int64_t t0 = t_now_ms();
	CHECK(ipc_recv(s, buf, sizeof buf, 0) == 4);
	CHECK(t_now_ms() - t0 >= 250);
	pthread_join(lt, NULL);

	printf("step: 2. blocking accept\n");
	/* 2. blocking accept */
	lat = (struct later){.what = "connect", .addr = bound};
	pthread_sigmask(SIG_BLOCK, &blk, &old);
	CHECK(pthread_create(&lt, NULL, later_main, &lat) == 0);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	ipc_conn *s2 = ipc_accept(l, 0);
	CHECK(s2 != NULL);
	pthread_join(lt, NULL);
	CHECK(lat.made != NULL);

	printf("step: 3. timeouts bound\n");
	/* 3. timeouts bound the whole call, however many signals arrive */
	CHECK(ipc_conn_set_timeouts(s, 300, 300) == 0);
	long before = sig_count;
	t0 = t_now_ms();
	CHECK_FAILS(ipc_recv(s, buf, sizeof buf, 0), ETIMEDOUT);
	int64_t dt = t_now_ms() - t0;
	CHECKF(dt >= 290 && dt < 2000, "timed receive took %lld ms", (long long)dt);
	CHECKF(sig_count - before > 20, "only %ld signals during the wait", (long)(sig_count - before));
	struct ipc_pollitem it = {.conn = s, .events = IPC_POLLIN};
	t0 = t_now_ms();
	CHECK(ipc_poll(&it, 1, 300) == 0);
	dt = t_now_ms() - t0;
	CHECKF(dt >= 290 && dt < 2000, "ipc_poll(300) took %lld ms", (long long)dt);

	printf("step: 4. blocking send\n");
	/* 4. blocking send on a full connection completes once drained */
	static char chunk[16384];
	while (ipc_send(s, chunk, sizeof chunk, IPC_DONTWAIT) >= 0)
		;
	CHECK(errno == EAGAIN);
	t0 = t_now_ms();
	CHECK_FAILS(ipc_send(s, chunk, sizeof chunk, 0), ETIMEDOUT);
	dt = t_now_ms() - t0;
	CHECKF(dt >= 290 && dt < 2000, "timed send took %lld ms", (long long)dt);
	CHECK(ipc_conn_set_timeouts(s, -1, -1) == 0);
	lat = (struct later){.what = "drain", .c = c};
	pthread_sigmask(SIG_BLOCK, &blk, &old);
	CHECK(pthread_create(&lt, NULL, later_main, &lat) == 0);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	CHECK(ipc_send(s, chunk, sizeof chunk, 0) == (ssize_t)sizeof chunk);
	CHECK(ipc_close(s) == 0); /* the drainer sees the end and stops */
	pthread_join(lt, NULL);

	__atomic_store_n(&pest.stop, 1, __ATOMIC_RELEASE);
	pthread_join(pt, NULL);
	printf("%ld signals delivered\n", (long)sig_count);
	ipc_close(c);
	ipc_close(s2);
	ipc_close(lat.made);
	ipc_listener_close(l);
}
