/* test_netns.c - tcp: and tls: between two hosts: two network namespaces joined by a
 * veth pair (10.200.0.1 <-> 10.200.0.2, addresses that exist only inside
 * the namespaces this test creates).  A server in one namespace, clients in
 * the other; data verified; then the link is taken down mid-transfer and
 * the client must fail within its configured timeout, not hang.  Needs root
 * and iproute2; skips with the reason otherwise.  The namespaces are named
 * after the pid and always deleted by the test process, whatever happens
 * to the worker. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define TIMEOUT_MS 2000
#define NCLIENTS 3

static char ns_a[32], ns_b[32], veth_a[16], veth_b[16];
static const char *scheme_; /* "tcp" or "tls" */

static void enter_ns(const char *ns)
{
	char p[128];
	snprintf(p, sizeof p, "/var/run/netns/%s", ns);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	CHECKF(fd >= 0, "open %s", p);
	CHECKF(setns(fd, CLONE_NEWNET) == 0, "setns %s", ns);
	close(fd);
}

static size_t nsize(uint64_t seq)
{
	return seq % 10 == 0 ? 100000 + (size_t)(seq % 777) : (size_t)(seq * 53 % 1500);
}

static void *echo_main(void *arg)
{
	ipc_conn *c = arg;
	void *m;
	ssize_t r;
	while ((r = ipc_recv_alloc(c, &m, 0)) >= 0) {
		ssize_t w = ipc_send(c, m, (size_t)r, 0);
		free(m);
		if (w < 0)
			break;
	}
	return NULL;
}

static void server(int wfd)
{
	enter_ns(ns_a);
	char a[64];
	snprintf(a, sizeof a, "%s:10.200.0.1:0", scheme_);
	ipc_listener *l = ipc_listen(a, NULL); /* tls: the run's test certificate */
	CHECK(l != NULL);
	char bound[IPC_ADDR_MAX + 1];
	CHECK_GT(ipc_listener_addr(l, bound, sizeof bound), 0);
	CHECK_GT(write(wfd, bound, strlen(bound) + 1), 0);
	close(wfd);
	for (;;) {
		ipc_conn *c = ipc_accept(l, 0);
		CHECK(c != NULL);
		pthread_t t;
		CHECK(pthread_create(&t, NULL, echo_main, c) == 0);
		pthread_detach(t);
	}
}

/* One echo of message seq; 0 or -1 with errno. */
static int echo(ipc_conn *c, unsigned char *buf, uint64_t seq)
{
	size_t n = nsize(seq);
	t_fill(buf, n, seq);
	if (ipc_send(c, buf, n, 0) < 0)
		return -1;
	ssize_t r = ipc_recv(c, buf, 200000, 0);
	if (r < 0)
		return -1;
	CHECKF((size_t)r == n && t_verify(buf, n, seq), "echo %llu corrupt", (unsigned long long)seq);
	return 0;
}

static void worker(void)
{
	if (t_sh("ip netns add %s 2>/dev/null", ns_a) != 0) {
		printf("ip netns add not permitted here\n");
		_exit(77);
	}
	CHECK_EQ(t_sh("ip netns add %s", ns_b), 0);
	if (t_sh("ip link add %s netns %s type veth peer name %s netns %s 2>/dev/null", veth_a, ns_a, veth_b,
		 ns_b) != 0)
		CHECK(t_sh("ip link add %s type veth peer name %s && ip link set %s netns %s && ip link set %s netns %s",
			   veth_a, veth_b, veth_a, ns_a, veth_b, ns_b) == 0);
	CHECK(t_sh("ip -n %s addr add 10.200.0.1/24 dev %s && ip -n %s link set %s up && ip -n %s link set lo up",
		   ns_a, veth_a, ns_a, veth_a, ns_a) == 0);
	CHECK(t_sh("ip -n %s addr add 10.200.0.2/24 dev %s && ip -n %s link set %s up && ip -n %s link set lo up",
		   ns_b, veth_b, ns_b, veth_b, ns_b) == 0);
	int p[2];
	CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
	fflush(NULL);
	pid_t srv = fork();
	CHECK_GE(srv, 0);
	if (srv == 0) {
		close(p[0]);
		server(p[1]);
	}
	close(p[1]);
	char bound[IPC_ADDR_MAX + 1] = "";
	size_t got = 0;
	ssize_t r;
	while (got < sizeof bound && (r = read(p[0], bound + got, sizeof bound - got)) > 0)
		got += (size_t)r;
	close(p[0]);
	CHECKF(got > 0 && bound[got - 1] == '\0', "server did not start");

	enter_ns(ns_b);
	struct ipc_options o;
	ipc_options_init(&o);
	o.connect_timeout_ms = 5000;
	o.send_timeout_ms = TIMEOUT_MS;
	o.recv_timeout_ms = TIMEOUT_MS;
	o.tls_server_name = "localhost"; /* tls: the test certificate's name, verified */
	ipc_conn *c[NCLIENTS];
	int64_t t_up = t_now_ms();
	for (;;) { /* the link may take a moment to come up */
		c[0] = ipc_connect(bound, &o);
		if (c[0] || t_now_ms() - t_up > 10000)
			break;
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, NULL);
	}
	CHECKF(c[0] != NULL, "connect %s from the other namespace", bound);
	for (int i = 1; i < NCLIENTS; i++)
		CHECKF((c[i] = ipc_connect(bound, &o)) != NULL, "client %d", i);
	unsigned char *buf = malloc(200000);
	CHECK(buf != NULL);
	uint64_t seq = 0;
	int rounds = getenv("IPC_SOAK") ? 2000 : 200;
	for (int k = 0; k < rounds; k++)
		for (int i = 0; i < NCLIENTS; i++)
			CHECKF(echo(c[i], buf, seq++) == 0, "echo before the link went down");
	long verified = (long)seq;

	/* mid-transfer: a helper takes the link down while we keep echoing */
	volatile int64_t *t_down = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(t_down != MAP_FAILED);
	*t_down = 0;
	fflush(NULL);
	pid_t h = fork();
	CHECK_GE(h, 0);
	if (h == 0) {
		struct timespec ts = {0, 100000000};
		nanosleep(&ts, NULL);
		int rc = t_sh("ip -n %s link set %s down", ns_a, veth_a);
		*t_down = t_now_ms();
		_exit(rc);
	}
	int err = 0;
	for (;;) {
		if (echo(c[0], buf, seq) < 0) {
			err = errno;
			break;
		}
		seq++;
		CHECKF(t_now_ms() - t_up < 60000, "the link never went down");
	}
	int64_t t_fail = t_now_ms();
	t_wait_ok(h);
	int64_t dt = t_fail - *t_down;
	printf("FIGURE netns_%s_link_down: %d clients, %ld echoes verified across namespaces, %ld more during "
	       "the transfer; link down -> %s after %lld ms (timeout %d ms)\n",
	       scheme_, NCLIENTS, verified, (long)seq - verified, strerror(err), (long long)dt, TIMEOUT_MS);
	CHECKF(*t_down != 0 && dt <= TIMEOUT_MS + 2000, "failure %lld ms after the link went down", (long long)dt);
	CHECKF(err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH || err == ECONNRESET || err == EPIPE,
	       "errno %d", err);
	for (int i = 0; i < NCLIENTS; i++)
		ipc_close(c[i]);
	kill(srv, SIGKILL);
	t_wait(srv);
	free(buf);
	_exit(0);
}

static void netns_link_down(const char *scheme)
{
	scheme_ = scheme;
	if (geteuid() != 0)
		SKIP("needs root for ip netns (run the suite as root to test tcp across two namespaces)");
	if (t_sh("command -v ip >/dev/null 2>&1") != 0)
		SKIP("the ip command (Debian package iproute2) is not installed");
	int id = (int)getpid();
	snprintf(ns_a, sizeof ns_a, "ipcrelA%d", id);
	snprintf(ns_b, sizeof ns_b, "ipcrelB%d", id);
	snprintf(veth_a, sizeof veth_a, "ipra%d", id % 10000000);
	snprintf(veth_b, sizeof veth_b, "iprb%d", id % 10000000);
	fflush(NULL);
	pid_t w = fork();
	CHECK_GE(w, 0);
	if (w == 0) {
		setpgid(0, 0);
		worker();
	}
	/* the cleanup is ours, whatever the worker does */
	int st = 0;
	int64_t t0 = t_now_ms();
	while (waitpid(w, &st, WNOHANG) == 0) {
		if (t_now_ms() - t0 > 50000) {
			kill(-w, SIGKILL);
			kill(w, SIGKILL);
			t_wait(w);
			st = -1;
			break;
		}
		struct timespec ts = {0, 20000000};
		nanosleep(&ts, NULL);
	}
	kill(-w, SIGKILL); /* the server and helpers, if still there */
	t_sh("ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null", ns_a, ns_b);
	CHECKF(t_sh("ip netns list | grep -q 'ipcrel[AB]%d'", id) != 0, "namespaces left behind");
	if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 77)
		SKIP("ip netns add is not permitted here (needs CAP_SYS_ADMIN)");
	CHECKF(st != -1, "worker hung for 50 s");
	CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker failed (status %#x)", st);
}

TEST(netns_tcp_link_down)
{
	netns_link_down("tcp");
}

/* The same over tls: (600 echoes through TLS, then the cut link). */
TEST(netns_tls_link_down)
{
	if (strcmp(t_env("IPC_TLS"), "1") != 0 || !t_tls_dir())
		SKIP("built without tls, or no openssl command for test certificates");
	netns_link_down("tls");
}
