/* runner.c - runs every registered test in its own process.
 *
 * usage: test-ipc [-j N] [-v] [FILTER...]
 *   FILTER   run only tests whose "name" or "name[scheme]" contains it
 *   -j N     run N tests at once (default: IPC_TEST_JOBS or 2)
 *   -v       print the output of passing tests too
 * IPC_TEST_SCHEMES="unix tcp" restricts the conformance schemes.
 *
 * Conformance tests (CTEST) also run once per pseudo-scheme "<s>-pair" for
 * every scheme s whose transport makes pairs (ipc_pair(3)): the test gets
 * the base scheme s, and t_pair() then returns the ends of ipc_pair(s)
 * instead of an accepted and a connected connection (t_pair_mode()).  A
 * pseudo-scheme runs when IPC_TEST_SCHEMES lists it or its base.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc_impl.h"
#include "test.h"

static struct test *head;
static unsigned test_timeout = 60;
char test__tmpdir[256];
int test__pair_mode;

void test__register(struct test *t)
{
	/* keep file/line order so runs are reproducible */
	struct test **pp = &head;
	while (*pp && (strcmp((*pp)->file, t->file) < 0 ||
		       (strcmp((*pp)->file, t->file) == 0 && (*pp)->line < t->line)))
		pp = &(*pp)->next;
	t->next = *pp;
	*pp = t;
}

void test__fail(const char *file, int line, const char *expr, int err, const char *fmt, ...)
{
	fprintf(stderr, "%s:%d: CHECK failed: %s (errno %d: %s)", file, line, expr, err, strerror(err));
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		fputs(": ", stderr);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
	}
	fputc('\n', stderr);
	fflush(NULL);
	_exit(1);
}

void test__skip(const char *why)
{
	fprintf(stderr, "skip: %s\n", why);
	fflush(NULL);
	_exit(77);
}

void test__timeout(unsigned seconds)
{
	alarm(seconds);
}

struct job {
	struct test *t;
	const char *scheme; /* as the test sees it (a pseudo-scheme's base) */
	int pair;           /* pseudo-scheme "<scheme>-pair" */
	pid_t pid;
	FILE *out;
	char dir[256];
	struct timespec start;
	int started;
};

/* POSIX queues draw on one per-user budget (RLIMIT_MSGQUEUE, 800 KiB by
 * default, and only raisable with CAP_SYS_RESOURCE): tests of the mq
 * transport run one at a time so that one of them filling the budget on
 * purpose (load, exhaustion) cannot fail another. */
static int uses_mq(const struct job *j)
{
	return (j->scheme && !strcmp(j->scheme, "mq")) || !strncmp(j->t->name, "mq_", 3);
}

static int rm_rf(const char *path)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
	return system(cmd);
}

static int start(struct job *j)
{
	snprintf(j->dir, sizeof j->dir, "/tmp/ipct.XXXXXX");
	if (!mkdtemp(j->dir)) {
		perror("mkdtemp");
		return -1;
	}
	j->out = tmpfile();
	if (!j->out) {
		perror("tmpfile");
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &j->start);
	fflush(NULL);
	j->pid = fork();
	if (j->pid < 0) {
		perror("fork");
		return -1;
	}
	if (j->pid == 0) {
		setpgid(0, 0);
		dup2(fileno(j->out), 1);
		dup2(fileno(j->out), 2);
		setvbuf(stdout, NULL, _IOLBF, 0);
		snprintf(test__tmpdir, sizeof test__tmpdir, "%s", j->dir);
		test__pair_mode = j->pair;
		signal(SIGPIPE, SIG_DFL); /* the library must never raise it */
		alarm(test_timeout);
		j->t->fn(j->scheme);
		fflush(NULL);
		_exit(0);
	}
	return 0;
}

static int verbose;

/* 0 pass, 1 fail, 2 skip */
static int finish(struct job *j, int status)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double secs = (double)(now.tv_sec - j->start.tv_sec) + (double)(now.tv_nsec - j->start.tv_nsec) / 1e9;
	int res;
	char why[64] = "";
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		res = 0;
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
		res = 2;
	else {
		res = 1;
		if (WIFSIGNALED(status))
			snprintf(why, sizeof why, " (killed by signal %d%s)", WTERMSIG(status),
				 WTERMSIG(status) == SIGALRM ? ": time limit" : "");
	}
	kill(-j->pid, SIGKILL); /* anything the test forked */
	char name[160];
	snprintf(name, sizeof name, "%s%s%s%s%s", j->t->name, j->scheme ? "[" : "", j->scheme ? j->scheme : "",
		 j->pair ? "-pair" : "", j->scheme ? "]" : "");
	printf("%-4s %-48s %6.2fs%s\n", res == 0 ? "ok" : res == 1 ? "FAIL" : "skip", name, secs, why);
	if (res != 0 || verbose) {
		char buf[4096];
		size_t n;
		rewind(j->out);
		while ((n = fread(buf, 1, sizeof buf, j->out)) > 0) {
			if (res == 2) { /* one line is enough for a skip */
				char *nl = memchr(buf, '\n', n);
				n = nl ? (size_t)(nl - buf) + 1 : n;
				fputs("     ", stdout);
				fwrite(buf, 1, n, stdout);
				break;
			}
			fwrite(buf, 1, n, stdout);
		}
	}
	fflush(stdout);
	fclose(j->out);
	rm_rf(j->dir);
	return res;
}

static int matches(const char *name, const char *scheme, int pair, int nf, char **filters)
{
	if (nf == 0)
		return 1;
	char full[160];
	snprintf(full, sizeof full, "%s[%s%s]", name, scheme ? scheme : "", pair ? "-pair" : "");
	for (int i = 0; i < nf; i++)
		if (strstr(full, filters[i]))
			return 1;
	return 0;
}

static int scheme_listed(const char *only, const char *s, const char *suffix)
{
	char buf[256], want[64];
	snprintf(buf, sizeof buf, " %s ", only);
	snprintf(want, sizeof want, " %s%s ", s, suffix);
	return strstr(buf, want) != NULL;
}

static int scheme_enabled(const char *s, int pair)
{
	const char *only = getenv("IPC_TEST_SCHEMES");
	if (!only || !*only)
		return 1;
	return scheme_listed(only, s, "") || (pair && scheme_listed(only, s, "-pair"));
}

static int add_job(struct job **list, size_t *n, size_t *cap, struct test *t, const char *s, int pair)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		struct job *nl = realloc(*list, *cap * sizeof **list);
		if (!nl)
			return -1;
		*list = nl;
	}
	memset(&(*list)[*n], 0, sizeof (*list)[*n]);
	(*list)[*n].t = t;
	(*list)[*n].scheme = s;
	(*list)[*n].pair = pair;
	(*n)++;
	return 0;
}

int main(int argc, char **argv)
{
	int jobs = getenv("IPC_TEST_JOBS") ? atoi(getenv("IPC_TEST_JOBS")) : 2;
	int opt;
	while ((opt = getopt(argc, argv, "j:v")) != -1) {
		if (opt == 'j')
			jobs = atoi(optarg);
		else if (opt == 'v')
			verbose = 1;
		else {
			fprintf(stderr, "usage: %s [-j N] [-v] [FILTER...]\n", argv[0]);
			return 2;
		}
	}
	if (jobs < 1)
		jobs = 1;
	if (getenv("IPC_SAN") && *getenv("IPC_SAN"))
		test_timeout = 240; /* sanitizers slow everything down */
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* more room in the per-user POSIX queue budget where permitted (see
	 * uses_mq); tests of exhaustion lower it themselves in a child */
	struct rlimit rl;
	if (getrlimit(RLIMIT_MSGQUEUE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max = RLIM_INFINITY;
		if (setrlimit(RLIMIT_MSGQUEUE, &rl) < 0 && getrlimit(RLIMIT_MSGQUEUE, &rl) == 0) {
			rl.rlim_cur = rl.rlim_max; /* not root: as far as allowed */
			setrlimit(RLIMIT_MSGQUEUE, &rl);
		}
	}

	/* the work list: every test, conformance tests once per scheme and
	 * once per pair pseudo-scheme */
	struct job *list = NULL;
	size_t n = 0, cap = 0;
	for (struct test *t = head; t; t = t->next) {
		if (!t->per_scheme) {
			if (matches(t->name, NULL, 0, argc - optind, argv + optind) && add_job(&list, &n, &cap, t, NULL, 0) < 0)
				return 2;
			continue;
		}
		for (int pair = 0; pair <= (t->per_scheme == 1); pair++)
			for (const struct ipc__transport *const *tp = ipc__transports; *tp; tp++) {
				const char *s = (*tp)->scheme;
				int framed = (*tp)->recv == ipc__stream_recv;
				if ((pair && !(*tp)->pair) || !scheme_enabled(s, pair) ||
				    (t->per_scheme == 2 && !framed) || !matches(t->name, s, pair, argc - optind, argv + optind))
					continue;
				if (add_job(&list, &n, &cap, t, s, pair) < 0)
					return 2;
			}
	}

	/* tls: a test CA and certificates for the whole run (util.c) */
	for (const struct ipc__transport *const *tp = ipc__transports; *tp; tp++)
		if (!strcmp((*tp)->scheme, "tls") && n)
			t_tls_setup();

	int passed = 0, failed = 0, skipped = 0;
	size_t next = 0, running = 0;
	struct job **slots = calloc((size_t)jobs, sizeof *slots);
	int mq_running = 0;
	while (next < n || running > 0) {
		while (running < (size_t)jobs && next < n) {
			struct job *j = NULL;
			for (size_t k = next; k < n && !j; k++)
				if (!list[k].started && !(mq_running && uses_mq(&list[k])))
					j = &list[k];
			if (!j)
				break; /* only mq tests are left: wait for the running one */
			j->started = 1;
			mq_running += uses_mq(j);
			while (next < n && list[next].started)
				next++;
			if (start(j) < 0) {
				mq_running -= uses_mq(j);
				failed++;
				continue;
			}
			for (int s = 0; s < jobs; s++)
				if (!slots[s]) {
					slots[s] = j;
					break;
				}
			running++;
		}
		int status;
		pid_t pid = waitpid(-1, &status, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int s = 0; s < jobs; s++) {
			if (slots[s] && slots[s]->pid == pid) {
				mq_running -= uses_mq(slots[s]);
				int r = finish(slots[s], status);
				passed += r == 0;
				failed += r == 1;
				skipped += r == 2;
				slots[s] = NULL;
				running--;
				break;
			}
		}
	}
	free(slots);
	free(list);
	if (skipped)
		printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	else
		printf("%d passed, %d failed\n", passed, failed);
	t_tls_cleanup();
	return failed ? 1 : 0;
}
