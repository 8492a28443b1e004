/* test_tools.c - ipc-cat and ipc-bench, run as programs from $IPC_BUILD. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

/* Path of a built tool; SKIP when the build directory is unknown. */
static const char *tool(const char *name)
{
	static char path[4][1024];
	static int k;
	const char *b = t_env("IPC_BUILD");
	if (!*b)
		SKIP("IPC_BUILD not set");
	char *p = path[k++ & 3];
	snprintf(p, sizeof path[0], "%s/%s", b, name);
	if (access(p, X_OK) != 0)
		SKIP("tool not built");
	return p;
}

/* Run a shell command in the background; returns the pid of the command
 * itself (sh execs it). */
static pid_t spawn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static pid_t spawn(const char *fmt, ...)
{
	char cmd[4096], full[4200];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	CHECK(n > 0 && (size_t)n < sizeof cmd);
	snprintf(full, sizeof full, "exec %s", cmd);
	fflush(NULL);
	pid_t pid = fork();
	CHECK_GE(pid, 0);
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", full, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* Exit status of pid (128+signal when killed), waiting at most ms. */
static int reap(pid_t pid, int ms)
{
	int st;
	int64_t end = t_now_ms() + ms;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		CHECK_GE(r, 0);
		if (r == pid)
			break;
		if (t_now_ms() > end) {
			kill(pid, SIGKILL);
			CHECK_EQ(waitpid(pid, &st, 0), pid);
			CHECKF(0, "process %d did not exit within %d ms", (int)pid, ms);
		}
		usleep(2000);
	}
	return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
}

/* Wait until path exists (written by --addr-file) and read its first line. */
static void read_addr_file(const char *path, char *addr, size_t len, pid_t srv)
{
	int64_t end = t_now_ms() + 10000;
	FILE *f;
	while (!(f = fopen(path, "r"))) {
		int st;
		CHECKF(waitpid(srv, &st, WNOHANG) == 0, "listener exited before writing %s", path);
		CHECKF(t_now_ms() < end, "no address in %s", path);
		usleep(2000);
	}
	CHECK(fgets(addr, (int)len, f) != NULL);
	fclose(f);
	addr[strcspn(addr, "\n")] = 0;
	CHECK_NE(addr[0], 0);
}

/* 10,000 lines of varied length (including empty ones), newline-terminated. */
static void make_lines(const char *path, int n)
{
	FILE *f = fopen(path, "w");
	CHECK(f != NULL);
	for (int i = 0; i < n; i++) {
		if (i % 13 == 0) {
			fputc('\n', f);
			continue;
		}
		fprintf(f, "%d:", i);
		for (int k = 0; k < (i * 7) % 97; k++)
			fputc(' ' + (i + k) % 94, f);
		fputc('\n', f);
	}
	CHECK_EQ(fclose(f), 0);
}

/* ipc-cat --echo listen + ipc-cat connect: 10,000 lines come back intact. */
CTEST(tools_cat_echo_roundtrip)
{
	const char *cat = tool("ipc-cat");
	const char *d = t_tmpdir();
	char in[512], out[512], af[512], addr[IPC_ADDR_MAX + 2];
	snprintf(in, sizeof in, "%s/in", d);
	snprintf(out, sizeof out, "%s/out", d);
	snprintf(af, sizeof af, "%s/addr", d);
	make_lines(in, 10000);
	pid_t srv = spawn("%s --echo --timeout 20000 --addr-file '%s' listen '%s' </dev/null", cat, af,
			  t_addr(scheme));
	read_addr_file(af, addr, sizeof addr, srv);
	int rc = t_sh("%s --count 10000 --timeout 20000 connect '%s' <'%s' >'%s'", cat, addr, in, out);
	CHECKF(rc == 0, "ipc-cat connect exited %d", rc);
	CHECKF(t_sh("cmp -s '%s' '%s'", in, out) == 0, "echoed lines differ");
	CHECKF((rc = reap(srv, 10000)) == 0, "listener exited %d", rc);
}

/* ipc-cat listen > out, ipc-cat --close connect < in: a one-way transfer. */
CTEST(tools_cat_oneway)
{
	const char *cat = tool("ipc-cat");
	const char *d = t_tmpdir();
	char in[512], out[512], af[512], addr[IPC_ADDR_MAX + 2];
	snprintf(in, sizeof in, "%s/in", d);
	snprintf(out, sizeof out, "%s/out", d);
	snprintf(af, sizeof af, "%s/addr", d);
	make_lines(in, 10000);
	pid_t srv = spawn("%s --timeout 20000 --addr-file '%s' listen '%s' </dev/null >'%s'", cat, af,
			  t_addr(scheme), out);
	read_addr_file(af, addr, sizeof addr, srv);
	int rc = t_sh("%s --close --timeout 20000 connect '%s' <'%s'", cat, addr, in);
	CHECKF(rc == 0, "ipc-cat connect exited %d", rc);
	CHECKF((rc = reap(srv, 10000)) == 0, "listener exited %d", rc);
	CHECKF(t_sh("cmp -s '%s' '%s'", in, out) == 0, "received lines differ");
}

/* --raw: binary data (with NULs and newlines) as one message, both ways. */
CTEST(tools_cat_raw)
{
	const char *cat = tool("ipc-cat");
	const char *d = t_tmpdir();
	char in[512], out[512], af[512], addr[IPC_ADDR_MAX + 2];
	snprintf(in, sizeof in, "%s/in", d);
	snprintf(out, sizeof out, "%s/out", d);
	snprintf(af, sizeof af, "%s/addr", d);
	unsigned char blob[300000];
	t_fill(blob, sizeof blob, 7);
	FILE *f = fopen(in, "w");
	CHECK(f && fwrite(blob, 1, sizeof blob, f) == sizeof blob && fclose(f) == 0);
	pid_t srv = spawn("%s --raw --echo --addr-file '%s' listen '%s' </dev/null", cat, af, t_addr(scheme));
	read_addr_file(af, addr, sizeof addr, srv);
	int rc = t_sh("%s --raw --count 1 --timeout 20000 connect '%s' <'%s' >'%s'", cat, addr, in, out);
	CHECKF(rc == 0, "ipc-cat connect exited %d", rc);
	CHECKF(t_sh("cmp -s '%s' '%s'", in, out) == 0, "raw message differs");
	CHECKF((rc = reap(srv, 10000)) == 0, "listener exited %d", rc);
}

/* Exit status 2 when nobody listens, 1 on bad usage. */
CTEST(tools_cat_connect_fails)
{
	const char *cat = tool("ipc-cat");
	const char *a = !strcmp(scheme, "tcp") ? "tcp:127.0.0.1:1" : !strcmp(scheme, "tls") ? "tls:127.0.0.1:1" : t_addr(scheme);
	int rc = t_sh("%s --timeout 5000 connect '%s' </dev/null 2>/dev/null", cat, a);
	CHECKF(rc == 2, "exit %d, expected 2", rc);
	CHECK_EQ(t_sh("%s --bogus connect '%s' </dev/null 2>/dev/null", cat, a), 1);
	CHECK_EQ(t_sh("%s frobnicate '%s' </dev/null 2>/dev/null", cat, a), 1);
	CHECK_EQ(t_sh("%s connect </dev/null 2>/dev/null", cat), 1);
	CHECK_EQ(t_sh("%s --help >/dev/null", cat), 0);
}

/* Exit status 3 when no message arrives in time (connect and listen). */
CTEST(tools_cat_timeout)
{
	const char *cat = tool("ipc-cat");
	const char *d = t_tmpdir();
	char af[512], addr[IPC_ADDR_MAX + 2];
	snprintf(af, sizeof af, "%s/addr", d);
	/* a listener that never sends, and a client that waits for it */
	pid_t srv = spawn("%s --addr-file '%s' listen '%s' </dev/null >/dev/null", cat, af, t_addr(scheme));
	read_addr_file(af, addr, sizeof addr, srv);
	int64_t t0 = t_now_ms();
	int rc = t_sh("%s --wait --timeout 300 connect '%s' </dev/null 2>/dev/null", cat, addr);
	CHECKF(rc == 3, "exit %d, expected 3", rc);
	CHECK_GE(t_now_ms() - t0, 250);
	CHECKF((rc = reap(srv, 10000)) == 0, "listener exited %d", rc);
	/* nobody connects */
	rc = t_sh("%s --timeout 200 listen '%s' </dev/null 2>/dev/null", cat, t_addr(scheme));
	CHECKF(rc == 3, "exit %d, expected 3", rc);
}

/* Exit status 4 on a protocol error: a "server" that answers with junk. */
TEST(tools_cat_protocol_error)
{
	const char *cat = tool("ipc-cat");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s/junk.sock", t_tmpdir());
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK_GE(fd, 0);
	CHECK_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	CHECK_EQ(listen(fd, 4), 0);
	pid_t cli = spawn("%s --wait --timeout 10000 connect 'unix:%s' </dev/null >/dev/null 2>&1", cat, sa.sun_path);
	int c = accept(fd, NULL, NULL);
	CHECK_GE(c, 0);
	static const char junk[] = "HTTP/1.0 200 OK\r\n\r\n";
	CHECK_EQ(write(c, junk, sizeof junk - 1), (ssize_t)sizeof junk - 1);
	int rc = reap(cli, 10000);
	CHECKF(rc == 4, "exit %d, expected 4", rc);
	close(c);
	close(fd);
}

/* Run ipc-bench with args, returning its single stdout line in line. */
static void bench(const char *args, char *line, size_t len)
{
	const char *b = tool("ipc-bench");
	char out[512];
	snprintf(out, sizeof out, "%s/bench.out", t_tmpdir());
	int rc = t_sh("%s %s >'%s'", b, args, out);
	CHECKF(rc == 0, "ipc-bench %s exited %d", args, rc);
	FILE *f = fopen(out, "r");
	CHECK(f != NULL);
	CHECKF(fgets(line, (int)len, f) != NULL, "ipc-bench %s printed nothing", args);
	char extra[64];
	CHECKF(fgets(extra, sizeof extra, f) == NULL, "ipc-bench %s printed more than one line", args);
	fclose(f);
}

/* The JSON lines have exactly the peerbench fields, in order. */
CTEST(tools_bench_json)
{
	TEST_TIMEOUT(120);
	char args[IPC_ADDR_MAX + 128], line[1024], tr[32];
	unsigned long long size, count, p50, p99, mean;
	double mps, mbs;
	int end = 0;

	snprintf(args, sizeof args, "lat '%s' --size 100 --count 300", t_addr(scheme));
	bench(args, line, sizeof line);
	CHECKF(sscanf(line,
		      "{\"impl\":\"libipc\",\"bench\":\"lat\",\"transport\":\"%31[a-z]\",\"size\":%llu,"
		      "\"count\":%llu,\"rtt_p50_ns\":%llu,\"rtt_p99_ns\":%llu,\"rtt_mean_ns\":%llu}\n%n",
		      tr, &size, &count, &p50, &p99, &mean, &end) == 6 && end == (int)strlen(line),
	       "bad lat line: %s", line);
	CHECK(!strcmp(tr, scheme) && size == 100 && count == 300);
	CHECK(p50 > 0 && p99 >= p50 && mean > 0);

	snprintf(args, sizeof args, "thr '%s' --size 1K --count 3000", t_addr(scheme));
	bench(args, line, sizeof line);
	end = 0;
	CHECKF(sscanf(line,
		      "{\"impl\":\"libipc\",\"bench\":\"thr\",\"transport\":\"%31[a-z]\",\"size\":%llu,"
		      "\"count\":%llu,\"msgs_per_s\":%lf,\"mb_per_s\":%lf}\n%n",
		      tr, &size, &count, &mps, &mbs, &end) == 5 && end == (int)strlen(line),
	       "bad thr line: %s", line);
	CHECK(!strcmp(tr, scheme) && size == 1024 && count == 3000 && mps > 0 && mbs > 0);

	snprintf(args, sizeof args, "thr '%s' --size 100 --count 5000 --batch 16", t_addr(scheme));
	bench(args, line, sizeof line);
	end = 0;
	CHECKF(sscanf(line,
		      "{\"impl\":\"libipc\",\"bench\":\"thr\",\"transport\":\"%31[a-z]\",\"size\":%llu,"
		      "\"count\":%llu,\"msgs_per_s\":%lf,\"mb_per_s\":%lf}\n%n",
		      tr, &size, &count, &mps, &mbs, &end) == 5 && end == (int)strlen(line),
	       "bad batched thr line: %s", line);
	CHECK(size == 100 && count == 5000);

	snprintf(args, sizeof args, "thr '%s' --size 200K --count 20", t_addr(scheme));
	bench(args, line, sizeof line);
	CHECKF(strstr(line, "\"size\":204800,\"count\":20,") != NULL, "bad big thr line: %s", line);

	snprintf(args, sizeof args, "conn '%s' --count 50", t_addr(scheme));
	bench(args, line, sizeof line);
	end = 0;
	CHECKF(sscanf(line,
		      "{\"impl\":\"libipc\",\"bench\":\"conn\",\"transport\":\"%31[a-z]\",\"count\":%llu,"
		      "\"conns_per_s\":%lf}\n%n",
		      tr, &count, &mps, &end) == 3 && end == (int)strlen(line),
	       "bad conn line: %s", line);
	CHECK(!strcmp(tr, scheme) && count == 50 && mps > 0);

	CHECK_EQ(t_sh("%s lat '%s' --count 100 --human | grep -q '^lat '", tool("ipc-bench"), t_addr(scheme)), 0);
}

/* Usage errors and a server that cannot start fail with a message. */
TEST(tools_bench_errors)
{
	const char *b = tool("ipc-bench");
	CHECK_NE(t_sh("%s >/dev/null 2>&1", b), 0);
	CHECK_NE(t_sh("%s lat >/dev/null 2>&1", b), 0);
	CHECK_NE(t_sh("%s nope unix:@x >/dev/null 2>&1", b), 0);
	CHECK_NE(t_sh("%s lat unix:@x --size 1Q >/dev/null 2>&1", b), 0);
	CHECK_EQ(t_sh("%s lat bogus:x --count 10 >/dev/null 2>&1", b), 1);
	CHECK_EQ(t_sh("%s lat 'unix:%s/no/such/dir/s' --count 10 >/dev/null 2>&1", b, t_tmpdir()), 1);
	CHECK_EQ(t_sh("%s --version >/dev/null", b), 0);
}

/* Every example runs on its own (forking its peers) and succeeds. */
TEST(examples_selftest)
{
	TEST_TIMEOUT(120);
	static const char *const ex[] = {"demo", "echo_server", "echo_client", "reqrep", "fanout", "epoll_loop",
					 "server"};
	const char *b = t_env("IPC_BUILD");
	if (!*b)
		SKIP("IPC_BUILD not set");
	for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
		int rc = t_sh("%s/examples/%s >/dev/null", b, ex[i]);
		CHECKF(rc == 0, "example %s exited %d", ex[i], rc);
	}
}

/* The examples that take an address work over every scheme. */
CTEST(examples_any_scheme)
{
	TEST_TIMEOUT(120);
	const char *b = t_env("IPC_BUILD");
	if (!*b)
		SKIP("IPC_BUILD not set");
	int rc = t_sh("%s/examples/reqrep '%s' >/dev/null", b, t_addr(scheme));
	CHECKF(rc == 0, "reqrep exited %d", rc);
	rc = t_sh("%s/examples/epoll_loop '%s' >/dev/null", b, t_addr(scheme));
	CHECKF(rc == 0, "epoll_loop exited %d", rc);
	/* echo_server ADDR 1 prints the bound address; echo_client uses it */
	char out[512], line[IPC_ADDR_MAX + 64];
	snprintf(out, sizeof out, "%s/srv.out", t_tmpdir());
	pid_t srv = spawn("%s/examples/echo_server '%s' 1 >'%s'", b, t_addr(scheme), out);
	int64_t end = t_now_ms() + 10000;
	for (;;) {
		FILE *f = fopen(out, "r");
		int got = f && fgets(line, sizeof line, f) && strchr(line, '\n');
		if (f)
			fclose(f);
		if (got)
			break;
		CHECKF(t_now_ms() < end, "echo_server printed no address");
		usleep(2000);
	}
	line[strcspn(line, "\n")] = 0;
	CHECK(!strncmp(line, "listening on ", 13));
	rc = t_sh("%s/examples/echo_client '%s' one two '' three | tr '\\n' , | grep -qx 'one,two,,three,'", b,
		  line + 13);
	CHECKF(rc == 0, "echo_client over %s failed", line + 13);
	CHECKF((rc = reap(srv, 10000)) == 0, "echo_server exited %d", rc);
}

/* Wait until file contains text (a --verbose log line). */
static void wait_for_text(const char *file, const char *text, pid_t srv)
{
	int64_t end = t_now_ms() + 10000;
	while (t_sh("grep -qF '%s' '%s' 2>/dev/null", text, file) != 0) {
		int st;
		CHECKF(waitpid(srv, &st, WNOHANG) == 0, "listener exited before logging '%s'", text);
		CHECKF(t_now_ms() < end, "no '%s' in %s", text, file);
		usleep(2000);
	}
}

/* listen --keep-open serves every connection at once: a first client that
 * sends nothing does not keep a second one from being served (with plain
 * --keep, the second waits for the first to close). */
CTEST(tools_cat_keep_open)
{
	const char *cat = tool("ipc-cat");
	const char *d = t_tmpdir();
	char af[512], log[512], out[512], addr[IPC_ADDR_MAX + 2];
	snprintf(af, sizeof af, "%s/addr", d);
	snprintf(log, sizeof log, "%s/log", d);
	snprintf(out, sizeof out, "%s/out", d);
	pid_t srv = spawn("%s --echo --keep-open --count 3 --timeout 20000 --verbose --addr-file '%s' "
			  "listen '%s' </dev/null 2>'%s'",
			  cat, af, t_addr(scheme), log);
	read_addr_file(af, addr, sizeof addr, srv);
	/* the idle client: stdin a pipe nobody writes to */
	int idle_in[2];
	CHECK_EQ(pipe(idle_in), 0);
	pid_t idle = spawn("%s --wait --timeout 30000 connect '%s' <&%d >/dev/null", cat, addr, idle_in[0]);
	wait_for_text(log, "connection ", srv); /* accepted */
	int64_t t0 = t_now_ms();
	int rc = t_sh("printf 'a\\nbb\\n\\n' | %s --count 3 --timeout 10000 connect '%s' >'%s'", cat, addr, out);
	CHECKF(rc == 0, "second client exited %d after %lld ms", rc, (long long)(t_now_ms() - t0));
	CHECKF(t_sh("printf 'a\\nbb\\n\\n' | cmp -s - '%s'", out) == 0, "echoes differ");
	CHECKF((rc = reap(srv, 10000)) == 0, "listener exited %d", rc);
	/* the listener's exit closed the idle connection: the idle client ends */
	close(idle_in[1]);
	close(idle_in[0]);
	CHECKF((rc = reap(idle, 10000)) == 0, "idle client exited %d", rc);
}

/* listen --keep-open without --echo: messages of every client are printed,
 * and each stdin line goes to every client connected. */
CTEST(tools_cat_keep_open_lines)
{
	const char *cat = tool("ipc-cat");
	const char *d = t_tmpdir();
	char af[512], log[512], out[512], o1[512], o2[512], addr[IPC_ADDR_MAX + 2];
	snprintf(af, sizeof af, "%s/addr", d);
	snprintf(log, sizeof log, "%s/log", d);
	snprintf(out, sizeof out, "%s/out", d);
	snprintf(o1, sizeof o1, "%s/o1", d);
	snprintf(o2, sizeof o2, "%s/o2", d);
	int srv_in[2];
	CHECK_EQ(pipe(srv_in), 0);
	pid_t srv = spawn("%s --keep-open --count 2 --timeout 20000 --verbose --addr-file '%s' "
			  "listen '%s' <&%d >'%s' 2>'%s'",
			  cat, af, t_addr(scheme), srv_in[0], out, log);
	close(srv_in[0]);
	read_addr_file(af, addr, sizeof addr, srv);
	/* each client waits for the listener's line, then says one line; the
	 * listener stops after two, which ends the clients (--wait) */
	int p1[2], p2[2];
	CHECK_EQ(pipe(p1), 0);
	CHECK_EQ(pipe(p2), 0);
	pid_t c1 = spawn("%s --wait --timeout 20000 connect '%s' <&%d >'%s'", cat, addr, p1[0], o1);
	wait_for_text(log, "connection 1 accepted", srv);
	pid_t c2 = spawn("%s --wait --timeout 20000 connect '%s' <&%d >'%s'", cat, addr, p2[0], o2);
	wait_for_text(log, "connection 2 accepted", srv);
	CHECK_EQ(write(srv_in[1], "to-all\n", 7), 7);
	wait_for_text(o1, "to-all", srv);
	wait_for_text(o2, "to-all", srv);
	CHECK_EQ(write(p1[1], "from-1\n", 7), 7);
	CHECK_EQ(write(p2[1], "from-2\n", 7), 7);
	close(p1[1]), close(p2[1]);
	int rc;
	CHECKF((rc = reap(c1, 10000)) == 0, "client 1 exited %d", rc);
	CHECKF((rc = reap(c2, 10000)) == 0, "client 2 exited %d", rc);
	CHECKF((rc = reap(srv, 10000)) == 0, "listener exited %d", rc);
	CHECK_EQ(t_sh("grep -qx to-all '%s' && grep -qx to-all '%s'", o1, o2), 0);
	CHECK_EQ(t_sh("sort '%s' | tr '\\n' , | grep -qx 'from-1,from-2,'", out), 0);
	close(srv_in[1]), close(p1[0]), close(p2[0]);
}
