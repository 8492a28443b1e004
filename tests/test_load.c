/* test_load.c - load: many concurrent connections per backend, each
 * sending many messages of mixed sizes, every one verified for content and
 * order by a single-threaded ipc_poll() server.  CI runs a short form;
 * IPC_SOAK=1 (make soak) runs 200 x 10,000.  IPC_LOAD_CONNS and
 * IPC_LOAD_MSGS override the counts.  Prints messages/s and peak RSS. */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#define PROCS 4
#define MAXMSG (70 * 1024)

static size_t load_size(uint64_t seq)
{
	if (seq % 100 == 7)
		return 65536 + (size_t)(seq % 3000);
	if (seq % 10 == 3)
		return 4096 + (size_t)(seq * 7 % 2000);
	return (size_t)(seq * 31 % 300);
}

static uint64_t key(uint64_t id, uint64_t seq)
{
	return id * 1000003u + seq;
}

struct load_shared {
	volatile int connected;   /* connections made by all clients */
	volatile int procs_ready; /* clients done connecting */
	volatile int refused;     /* connects refused for lack of resources */
	volatile int refused_errno;
};

static void load_client(const char *bound, int first, int count, long msgs, struct load_shared *sh)
{
	struct ipc_options o;
	ipc_options_init(&o);
	o.recv_timeout_ms = 60000;
	o.send_timeout_ms = 60000;
	ipc_conn **c = calloc((size_t)count, sizeof *c);
	unsigned char *buf = malloc(MAXMSG);
	if (!c || !buf)
		_exit(2);
	int n = 0;
	for (; n < count; n++) {
		c[n] = ipc_connect(bound, &o);
		if (!c[n]) {
			/* only a backend with a kernel quota (mq) may run out */
			int e = errno;
			if (e == EMFILE || e == ENOSPC || e == ENOMEM) {
				__atomic_add_fetch(&sh->refused, count - n, __ATOMIC_SEQ_CST);
				sh->refused_errno = e;
				break;
			}
			fprintf(stderr, "connect %d: %s\n", first + n, strerror(e));
			_exit(3);
		}
		uint64_t id = (uint64_t)(first + n);
		if (ipc_send(c[n], &id, sizeof id, 0) != (ssize_t)sizeof id)
			_exit(4);
		__atomic_add_fetch(&sh->connected, 1, __ATOMIC_SEQ_CST);
	}
	__atomic_add_fetch(&sh->procs_ready, 1, __ATOMIC_SEQ_CST);
	for (long seq = 0; seq < msgs; seq++) {
		size_t len = load_size((uint64_t)seq);
		for (int i = 0; i < n; i++) {
			t_fill(buf, len, key((uint64_t)(first + i), (uint64_t)seq));
			if (ipc_send(c[i], buf, len, 0) != (ssize_t)len) {
				fprintf(stderr, "send %d/%ld: %s\n", first + i, seq, strerror(errno));
				_exit(5);
			}
		}
	}
	for (int i = 0; i < n; i++) {
		long got = -1;
		if (ipc_recv(c[i], &got, sizeof got, 0) != (ssize_t)sizeof got || got != msgs) {
			fprintf(stderr, "ack %d: %ld (%s)\n", first + i, got, strerror(errno));
			_exit(6);
		}
		ipc_close(c[i]);
	}
	_exit(0);
}

struct srv_conn {
	ipc_conn *c;
	long id;   /* -1 until the first message */
	long next; /* next expected seq */
	int done;
};

CTEST(load_concurrent)
{
	int soak = getenv("IPC_SOAK") != NULL;
	int nconn = getenv("IPC_LOAD_CONNS") ? atoi(getenv("IPC_LOAD_CONNS")) : 200;
	long msgs = getenv("IPC_LOAD_MSGS") ? atol(getenv("IPC_LOAD_MSGS")) : soak ? 10000 : 300;
	TEST_TIMEOUT(soak ? 3600 : 180);
	if (!strcmp(scheme, "mq")) { /* queues count against RLIMIT_MSGQUEUE */
		struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
		setrlimit(RLIMIT_MSGQUEUE, &rl);
	}
	struct rlimit nf;
	getrlimit(RLIMIT_NOFILE, &nf);
	if (nf.rlim_cur < (rlim_t)nconn * 4 + 64 && nf.rlim_max >= (rlim_t)nconn * 4 + 64) {
		nf.rlim_cur = (rlim_t)nconn * 4 + 64;
		setrlimit(RLIMIT_NOFILE, &nf);
	}
	struct load_shared *sh =
		mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(sh != MAP_FAILED);
	struct ipc_options o;
	ipc_options_init(&o);
	char bound[IPC_ADDR_MAX + 1];
	int fd0 = t_fd_count();
	ipc_listener *l = t_listen(scheme, &o, bound);
	pid_t pids[PROCS];
	int64_t t0 = t_now_ms();
	for (int p = 0; p < PROCS; p++) {
		int first = nconn * p / PROCS, count = nconn * (p + 1) / PROCS - first;
		fflush(NULL);
		pids[p] = fork();
		CHECK_GE(pids[p], 0);
		if (pids[p] == 0)
			load_client(bound, first, count, msgs, sh);
	}
	struct srv_conn *sc = calloc((size_t)nconn, sizeof *sc);
	struct ipc_pollitem *items = calloc((size_t)nconn + 1, sizeof *items);
	int *map = calloc((size_t)nconn + 1, sizeof *map);
	unsigned char *buf = malloc(MAXMSG);
	CHECK(sc && items && map && buf);
	int accepted = 0, finished = 0;
	long total = 0;
	double bytes = 0;
	for (;;) {
		if (sh->procs_ready == PROCS && accepted == sh->connected && finished == accepted)
			break;
		CHECKF(t_now_ms() - t0 < (soak ? 3500000 : 170000), "load did not finish: %d/%d done", finished,
		       accepted);
		int n = 0;
		if (accepted < nconn) {
			items[n] = (struct ipc_pollitem){.listener = l, .events = IPC_POLLIN};
			map[n++] = -1;
		}
		for (int i = 0; i < accepted; i++)
			if (!sc[i].done) {
				items[n] = (struct ipc_pollitem){.conn = sc[i].c, .events = IPC_POLLIN};
				map[n++] = i;
			}
		int r = ipc_poll(items, (size_t)n, 1000);
		CHECK_GE(r, 0);
		for (int k = 0; k < n && r > 0; k++) {
			if (!items[k].revents)
				continue;
			if (map[k] < 0) {
				ipc_conn *c;
				while (accepted < nconn && (c = ipc_accept(l, IPC_DONTWAIT)) != NULL)
					sc[accepted++] = (struct srv_conn){.c = c, .id = -1};
				CHECKF(errno == EAGAIN || accepted == nconn, "accept");
				continue;
			}
			struct srv_conn *s = &sc[map[k]];
			for (int burst = 0; burst < 64; burst++) {
				ssize_t got = ipc_recv(s->c, buf, MAXMSG, IPC_DONTWAIT);
				if (got < 0) {
					if (errno == EAGAIN)
						break;
					CHECKF(errno == EPIPE && s->next == msgs, "conn %ld after %ld messages: %s", s->id,
					       s->next, strerror(errno));
					ipc_close(s->c);
					s->done = 1;
					finished++;
					break;
				}
				if (s->id < 0) {
					uint64_t id;
					CHECK_EQ(got, (ssize_t)sizeof id);
					memcpy(&id, buf, sizeof id);
					CHECK(id < (uint64_t)nconn);
					s->id = (long)id;
					continue;
				}
				size_t want = load_size((uint64_t)s->next);
				CHECKF(s->next < msgs && (size_t)got == want &&
					       t_verify(buf, want, key((uint64_t)s->id, (uint64_t)s->next)),
				       "conn %ld message %ld: %zd bytes, want %zu", s->id, s->next, got, want);
				s->next++;
				total++;
				bytes += (double)got;
				if (s->next == msgs)
					CHECK_EQ(ipc_send(s->c, &msgs, sizeof msgs, 0), (ssize_t)sizeof msgs);
			}
		}
	}
	int64_t dt = t_now_ms() - t0;
	for (int p = 0; p < PROCS; p++)
		t_wait_ok(pids[p]);
	struct rusage ru;
	getrusage(RUSAGE_CHILDREN, &ru);
	CHECK_EQ(ipc_listener_close(l), 0);
	CHECK_EQ(total, (long)accepted * msgs);
	if (sh->refused)
		CHECKF(!strcmp(scheme, "mq"), "%d connects refused (%s)", sh->refused, strerror(sh->refused_errno));
	CHECKF(accepted >= (strcmp(scheme, "mq") ? nconn : 4), "only %d connections (%d refused: %s)", accepted, sh->refused, strerror(sh->refused_errno));
	CHECK_EQ(t_fd_count(), fd0);
	printf("FIGURE load_concurrent[%s]: %d connections%s, %ld messages each, %ld messages verified in "
	       "%.2f s: %.0f messages/s, %.1f MB/s; peak RSS server %ld KiB, client %ld KiB\n",
	       scheme, accepted, sh->refused ? " (rest refused: mq queue limit)" : "", msgs, total,
	       (double)dt / 1000, (double)total * 1000 / (double)(dt ? dt : 1),
	       bytes / 1e6 * 1000 / (double)(dt ? dt : 1), t_status_kib("VmHWM"), ru.ru_maxrss);
	free(sc);
	free(items);
	free(map);
	free(buf);
}
