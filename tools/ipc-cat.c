/*
 * ipc-cat - connect stdin/stdout to a libipc connection (see ipc-cat(1)).
 *
 *   ipc-cat [OPTIONS] listen ADDR
 *   ipc-cat [OPTIONS] connect ADDR
 *
 * listen --keep-open serves every connection at once in one poll loop.
 *
 * Exit status: 0 ok, 1 usage, 2 connect/listen failure, 3 timeout,
 * 4 protocol or connection error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"

enum { EX_OK = 0, EX_USAGE = 1, EX_CONNECT = 2, EX_TIMEOUT = 3, EX_CONN = 4 };

/* Send attempts wait at most this long, so receiving is never starved. */
#define SEND_SLICE_MS 20

static struct {
	int listen, keep, keep_open, echo, raw, hex, verbose, close_on_eof;
	long long count;  /* -1: unlimited */
	int timeout_ms;   /* -1: none */
	const char *addr, *addr_file;
	struct ipc_options opt;
} g;

static long long g_received; /* messages received so far (all connections) */

/* strerror, and the library's explanation when it has one (a certificate
 * not trusted, a peer that does not speak TLS ...). */
static const char *errtext(int e)
{
	static char b[400];
	const char *d = ipc_error_detail();
	snprintf(b, sizeof b, "%s%s%s", strerror(e), *d ? ": " : "", d);
	return b;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ipc-cat [OPTIONS] listen ADDR\n"
		"       ipc-cat [OPTIONS] connect ADDR\n"
		"Each stdin line is sent as one message; each received message is\n"
		"printed as one line.\n"
		"  --count N         exit after N received messages\n"
		"  --timeout MS      fail (exit 3) when connecting, accepting or waiting\n"
		"                    for the next message takes longer than MS\n"
		"  --echo            send every received message back (stdin unused)\n"
		"  --keep            listen: serve connections one after another\n"
		"  -k, --keep-open   listen: serve every connection at once (stdin lines\n"
		"                    go to all of them)\n"
		"  --close           connect: close once stdin ended and was sent, after\n"
		"                    printing what already arrived (the default unless\n"
		"                    --count or --wait is given)\n"
		"  --wait            connect: after stdin ends, keep printing until the\n"
		"                    peer closes (or --count / --timeout ends it)\n"
		"  --raw             all of stdin is one message; print messages as-is\n"
		"  --hex             print received messages in hexadecimal\n"
		"  --mode OCTAL      permissions of created objects (default 0600)\n"
		"  --max-size BYTES  largest message either way (default 64 MiB)\n"
		"  --addr-file FILE  listen: write the bound address to FILE\n"
		"  --retry           connect: wait for a listener that is not there yet\n"
		"                    (until --timeout)\n"
		"  --cert FILE       tls: certificate chain (PEM; a listener needs one)\n"
		"  --key FILE        tls: its private key (default: in --cert)\n"
		"  --ca FILE         tls: trusted CAs (default: the system's)\n"
		"  --ca-dir DIR      tls: directory of trusted CAs\n"
		"  --server-name N   tls connect: the name the server's certificate\n"
		"                    must carry (default: the address's host)\n"
		"  --verify WHAT     tls: peer (default), require (listen: client\n"
		"                    certificates required), none (no checks)\n"
		"  --tls13           tls: TLS 1.3 only\n"
		"  --verbose         connection events on stderr\n"
		"  --help            this text\n"
		"Exit status: 0 ok, 1 usage, 2 connect/listen failure, 3 timeout,\n"
		"4 protocol or connection error.\n");
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	if (!g.verbose)
		return;
	va_list ap;
	fputs("ipc-cat: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse_long(const char *s, long long lo, long long hi, int base, long long *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, base);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* Print (or echo) one received message.  Returns 0 or an exit code. */
static int deliver(const unsigned char *m, size_t n)
{
	if (g.raw) {
		if (n && fwrite(m, 1, n, stdout) != n)
			return EX_CONN;
	} else if (g.hex) {
		for (size_t i = 0; i < n; i++)
			printf("%02x", m[i]);
		putchar('\n');
	} else {
		if (n && fwrite(m, 1, n, stdout) != n)
			return EX_CONN;
		putchar('\n');
	}
	return ferror(stdout) ? EX_CONN : 0;
}

/* A growable byte buffer: bytes [off, len) are pending. */
struct buf {
	unsigned char *p;
	size_t off, len, cap;
};

static int buf_reserve(struct buf *b, size_t extra)
{
	if (b->off && b->off == b->len)
		b->off = b->len = 0;
	if (b->cap - b->len >= extra)
		return 0;
	if (b->off) {
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
		if (b->cap - b->len >= extra)
			return 0;
	}
	size_t nc = b->cap ? b->cap : 65536;
	while (nc - b->len < extra)
		nc *= 2;
	unsigned char *np = realloc(b->p, nc);
	if (!np)
		return -1;
	b->p = np;
	b->cap = nc;
	return 0;
}

/*
 * One connection: interleave stdin -> connection and connection -> stdout.
 * Returns an exit code; *stop is set when the whole program should end.
 */
static int session(ipc_conn *c, int *stdin_open, struct buf *in, int *stop)
{
	int rc = EX_OK;
	unsigned char *out = NULL; /* pending outgoing message */
	size_t outlen = 0;
	int have_out = 0;
	void *echo_msg = NULL;     /* pending echo (owned) */
	int64_t last = now_ms();
	int eof_done = 0; /* stdin ended and its last piece was taken */

	ipc_conn_set_timeouts(c, SEND_SLICE_MS, -1);
	for (;;) {
		/* 1. Drain the connection without waiting (unless an echo is
		 * still pending: that is our backpressure). */
		int flushed = 1;
		while (!(g.echo && have_out)) {
			void *m;
			ssize_t n = ipc_recv_alloc(c, &m, IPC_DONTWAIT);
			if (n < 0) {
				if (errno == EAGAIN)
					break;
				if (errno == EPIPE) {
					note("peer closed the connection");
					rc = EX_OK;
				} else {
					fprintf(stderr, "ipc-cat: receive: %s\n", errtext(errno));
					rc = EX_CONN;
				}
				goto done;
			}
			last = now_ms();
			g_received++;
			if (g.echo) {
				echo_msg = m;
				out = m;
				outlen = (size_t)n;
				have_out = 1;
			} else {
				int r = deliver(m, (size_t)n);
				free(m);
				flushed = 0;
				if (r) {
					rc = r;
					goto done;
				}
			}
			if (g.count >= 0 && g_received >= g.count) {
				if (have_out) { /* send the last echo before leaving */
					ipc_conn_set_timeouts(c, -1, -1);
					if (ipc_send(c, out, outlen, 0) < 0 && errno != EPIPE)
						rc = EX_CONN;
				}
				*stop = 1;
				goto done;
			}
		}
		if (!flushed && fflush(stdout) != 0) {
			rc = EX_CONN;
			goto done;
		}

		/* 2. Take the next message from stdin when nothing is pending. */
		if (!have_out && !g.echo) {
			unsigned char *nl = NULL;
			if (!g.raw && in->len > in->off)
				nl = memchr(in->p + in->off, '\n', in->len - in->off);
			if (nl) {
				out = in->p + in->off;
				outlen = (size_t)(nl - out);
				in->off += outlen + 1;
				have_out = 1;
			} else if (!*stdin_open && !eof_done) {
				/* raw: all of stdin; lines: a last line without '\n' */
				if (g.raw || in->len > in->off) {
					out = in->len ? in->p + in->off : (unsigned char *)"";
					outlen = in->len - in->off;
					in->off = in->len;
					have_out = 1;
				}
				eof_done = 1;
			}
		}
		if (eof_done && !have_out && g.close_on_eof) {
			note("stdin ended; closing");
			goto done;
		}

		/* 3. Try to send what is pending (bounded wait). */
		if (have_out) {
			ssize_t s = ipc_send(c, out, outlen, 0);
			if (s >= 0 || errno == EPIPE) {
				if (s < 0) { /* peer gone: the receive side says how */
					note("send: peer closed");
					*stdin_open = 0;
					in->off = in->len;
					eof_done = 1;
				}
				free(echo_msg);
				echo_msg = NULL;
				have_out = 0;
				last = now_ms();
				continue;
			}
			if (errno != ETIMEDOUT && errno != EAGAIN) {
				fprintf(stderr, "ipc-cat: send: %s\n", errtext(errno));
				rc = EX_CONN;
				goto done;
			}
		}

		/* 4. Wait for the connection or stdin. */
		short pev = 0;
		int ev = (have_out ? IPC_POLLOUT : 0) | (g.echo && have_out ? 0 : IPC_POLLIN);
		int r = ipc_conn_ready(c, ev, &pev);
		if (r < 0) {
			fprintf(stderr, "ipc-cat: %s\n", errtext(errno));
			rc = EX_CONN;
			goto done;
		}
		if (r)
			continue;
		int want_stdin = *stdin_open && !have_out && !g.echo;
		struct pollfd pf[2] = {{.fd = ipc_conn_fd(c), .events = pev},
				       {.fd = STDIN_FILENO, .events = POLLIN}};
		int wait = -1;
		if (g.timeout_ms >= 0) {
			int64_t left = last + g.timeout_ms - now_ms();
			if (left <= 0) {
				fprintf(stderr, "ipc-cat: timed out waiting for a message\n");
				rc = EX_TIMEOUT;
				goto done;
			}
			wait = (int)left;
		}
		int pr = poll(pf, want_stdin ? 2 : 1, wait);
		if (pr < 0 && errno != EINTR) {
			rc = EX_CONN;
			goto done;
		}
		if (pr > 0 && want_stdin && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			if (buf_reserve(in, 65536) < 0) {
				fprintf(stderr, "ipc-cat: out of memory\n");
				rc = EX_CONN;
				goto done;
			}
			ssize_t n = read(STDIN_FILENO, in->p + in->len, in->cap - in->len);
			if (n > 0) {
				in->len += (size_t)n;
				last = now_ms();
				if (g.raw && in->len - in->off > g.opt.max_msg_size) {
					fprintf(stderr, "ipc-cat: stdin is larger than --max-size\n");
					rc = EX_CONN;
					goto done;
				}
			} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
				*stdin_open = 0;
				note("end of stdin");
			}
		}
	}
done:
	free(echo_msg);
	fflush(stdout);
	if (ipc_close(c) < 0 && rc == EX_OK) {
		fprintf(stderr, "ipc-cat: close: %s\n", errtext(errno));
		rc = EX_CONN;
	}
	return rc;
}

/* ---- listen --keep-open: every connection at once, in one loop ---- */

struct peer {
	ipc_conn *c;
	void *echo;     /* an echo not yet accepted by ipc_send (owned) */
	size_t echolen;
	int want_line;  /* the stdin line in flight is still to be sent here */
	unsigned long id;
};

struct hub {
	ipc_listener *l;
	struct peer *p;
	size_t n, cap;
	unsigned char *line; /* the stdin line being sent to every peer */
	size_t linelen;
	int have_line;
	int64_t last;        /* last activity, for --timeout */
	unsigned long accepted;
};

/* Offer a message without waiting: 1 accepted (whole, per ipc_send(3)),
 * 0 not now (EAGAIN: an earlier message is still held), -1 failed. */
static int offer(ipc_conn *c, const void *m, size_t n)
{
	if (ipc_send(c, m, n, IPC_DONTWAIT) >= 0)
		return 1;
	return errno == EAGAIN ? 0 : -1;
}

static void hub_drop(struct hub *h, size_t i, const char *why, int err)
{
	struct peer *p = &h->p[i];
	if (err == EPIPE)
		note("connection %lu: peer closed", p->id);
	else
		fprintf(stderr, "ipc-cat: connection %lu: %s: %s\n", p->id, why, errtext(err));
	free(p->echo);
	ipc_close(p->c);
	h->p[i] = h->p[--h->n];
}

static int hub_accept(struct hub *h)
{
	ipc_conn *c;
	while ((c = ipc_accept(h->l, IPC_DONTWAIT)) != NULL) {
		if (h->n == h->cap) {
			size_t cap = h->cap ? 2 * h->cap : 16;
			struct peer *np = realloc(h->p, cap * sizeof *np);
			if (!np) {
				ipc_close(c);
				return -1;
			}
			h->p = np, h->cap = cap;
		}
		h->p[h->n++] = (struct peer){.c = c, .id = ++h->accepted};
		h->last = now_ms();
		note("connection %lu accepted (%zu open)", h->accepted, h->n);
	}
	return errno == EAGAIN || errno == ECONNABORTED || errno == EACCES || errno == EPERM ? 0 : -1;
}

/* Move one peer on without waiting: pending echo, the stdin line, then
 * what it sent.  0 keep, 1 drop it (reported), 2 --count reached. */
static int hub_pump(struct hub *h, struct peer *p, int *flushed)
{
	if (p->echo) {
		int r = offer(p->c, p->echo, p->echolen);
		if (r < 0)
			return 1;
		if (r == 0)
			return 0; /* its echo waits: do not read it (backpressure) */
		free(p->echo);
		p->echo = NULL;
	}
	if (h->have_line && p->want_line) {
		int r = offer(p->c, h->line, h->linelen);
		if (r < 0)
			return 1;
		p->want_line = r == 0;
	}
	while (!p->echo) {
		void *m;
		ssize_t n = ipc_recv_alloc(p->c, &m, IPC_DONTWAIT);
		if (n < 0)
			return errno == EAGAIN ? 0 : 1;
		h->last = now_ms();
		g_received++;
		if (g.echo) {
			p->echo = m, p->echolen = (size_t)n;
			int r = offer(p->c, m, (size_t)n);
			if (r < 0)
				return 1;
			if (r == 1) {
				free(p->echo);
				p->echo = NULL;
			}
		} else {
			int r = deliver(m, (size_t)n);
			free(m);
			*flushed = 0;
			if (r)
				return 1;
		}
		if (g.count >= 0 && g_received >= g.count)
			return 2;
	}
	return 0;
}

/* Take the next stdin line (or, with --raw, all of stdin once it ended)
 * for every peer open now.  Whether one was taken. */
static int hub_take_line(struct hub *h, struct buf *in, int stdin_open)
{
	if (g.echo || h->have_line || !h->n || in->len == in->off)
		return 0;
	unsigned char *nl = g.raw ? NULL : memchr(in->p + in->off, '\n', in->len - in->off);
	size_t len;
	if (nl)
		len = (size_t)(nl - (in->p + in->off));
	else if (!stdin_open)
		len = in->len - in->off;
	else
		return 0;
	free(h->line);
	h->line = malloc(len ? len : 1);
	if (!h->line)
		return 0;
	memcpy(h->line, in->p + in->off, len);
	h->linelen = len;
	in->off += len + (nl != NULL);
	h->have_line = 1;
	for (size_t i = 0; i < h->n; i++)
		h->p[i].want_line = 1;
	return 1;
}

static int hub_run(ipc_listener *l, struct buf *in, int *stdin_open)
{
	struct hub h = {.l = l, .last = now_ms()};
	struct pollfd *pf = NULL;
	size_t pfcap = 0;
	int rc = EX_OK;
	for (;;) {
		if (hub_accept(&h) < 0) {
			fprintf(stderr, "ipc-cat: accept: %s\n", errtext(errno));
			rc = EX_CONNECT;
			break;
		}
		int flushed = 1, stop = 0;
		for (size_t i = h.n; i-- > 0;) {
			int r = hub_pump(&h, &h.p[i], &flushed);
			if (r == 1)
				hub_drop(&h, i, "receive or send", errno);
			else if (r == 2)
				stop = 1;
		}
		if (!flushed && fflush(stdout) != 0) {
			rc = EX_CONN;
			break;
		}
		if (stop)
			break;
		if (h.have_line) {
			int pending = 0;
			for (size_t i = 0; i < h.n; i++)
				pending |= h.p[i].want_line;
			h.have_line = pending;
		}
		if (hub_take_line(&h, in, *stdin_open))
			continue;

		/* wait: the listener, every connection (for the poll(2)
		 * events ipc_conn_ready() names), stdin */
		if (pfcap < h.n + 2) {
			pfcap = 2 * (h.n + 2);
			struct pollfd *np = realloc(pf, pfcap * sizeof *np);
			if (!np) {
				rc = EX_CONN;
				break;
			}
			pf = np;
		}
		size_t k = 0;
		int ready = 0;
		short pev = 0;
		ready |= ipc_listener_ready(l, IPC_POLLIN, &pev) != 0;
		pf[k++] = (struct pollfd){.fd = ipc_listener_fd(l), .events = pev};
		for (size_t i = 0; i < h.n; i++) {
			struct peer *p = &h.p[i];
			int ev = p->echo ? IPC_POLLOUT : IPC_POLLIN | (p->want_line ? IPC_POLLOUT : 0);
			pev = 0;
			ready |= ipc_conn_ready(p->c, ev, &pev) != 0;
			pf[k++] = (struct pollfd){.fd = ipc_conn_fd(p->c), .events = pev};
		}
		int want_stdin = *stdin_open && !g.echo && !h.have_line && h.n;
		if (want_stdin)
			pf[k++] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
		int wait = ready ? 0 : -1;
		if (!ready && g.timeout_ms >= 0) {
			int64_t left = h.last + g.timeout_ms - now_ms();
			if (left <= 0) {
				fprintf(stderr, "ipc-cat: timed out waiting for a connection or message\n");
				rc = EX_TIMEOUT;
				break;
			}
			wait = (int)left;
		}
		int pr = poll(pf, k, wait);
		if (pr < 0 && errno != EINTR) {
			rc = EX_CONN;
			break;
		}
		if (pr > 0 && want_stdin && (pf[k - 1].revents & (POLLIN | POLLHUP | POLLERR))) {
			if (buf_reserve(in, 65536) < 0) {
				rc = EX_CONN;
				break;
			}
			ssize_t n = read(STDIN_FILENO, in->p + in->len, in->cap - in->len);
			if (n > 0) {
				in->len += (size_t)n;
				h.last = now_ms();
			} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
				*stdin_open = 0;
				note("end of stdin");
			}
		}
	}
	/* the last echo goes out before leaving (as in session()) */
	for (size_t i = 0; i < h.n; i++) {
		if (h.p[i].echo) {
			ipc_conn_set_timeouts(h.p[i].c, -1, -1);
			if (ipc_send(h.p[i].c, h.p[i].echo, h.p[i].echolen, 0) < 0 && errno != EPIPE)
				rc = rc ? rc : EX_CONN;
			free(h.p[i].echo);
		}
		ipc_close(h.p[i].c);
	}
	free(h.p);
	free(h.line);
	free(pf);
	fflush(stdout);
	return rc;
}

static int write_addr_file(const char *path, const char *addr)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid()) >= (int)sizeof tmp)
		return -1;
	FILE *f = fopen(tmp, "w");
	if (!f)
		return -1;
	int bad = fprintf(f, "%s\n", addr) < 0;
	bad |= fclose(f) != 0;
	if (bad || rename(tmp, path) < 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int run_listen(struct buf *in, int *stdin_open)
{
	ipc_listener *l = ipc_listen(g.addr, &g.opt);
	if (!l) {
		fprintf(stderr, "ipc-cat: listen %s: %s\n", g.addr, errtext(errno));
		return EX_CONNECT;
	}
	char bound[IPC_ADDR_MAX + 1];
	if (ipc_listener_addr(l, bound, sizeof bound) < 0)
		snprintf(bound, sizeof bound, "%s", g.addr);
	note("listening on %s", bound);
	if (g.addr_file && write_addr_file(g.addr_file, bound) < 0) {
		fprintf(stderr, "ipc-cat: %s: %s\n", g.addr_file, errtext(errno));
		ipc_listener_close(l);
		return EX_USAGE;
	}
	if (g.keep_open) {
		int rc = hub_run(l, in, stdin_open);
		ipc_listener_close(l);
		return rc;
	}
	int rc = EX_OK, stop = 0;
	do {
		struct ipc_pollitem it = {.listener = l, .events = IPC_POLLIN};
		int r = ipc_poll(&it, 1, g.timeout_ms);
		if (r == 0) {
			fprintf(stderr, "ipc-cat: timed out waiting for a connection\n");
			rc = EX_TIMEOUT;
			break;
		}
		ipc_conn *c = r < 0 ? NULL : ipc_accept(l, IPC_DONTWAIT);
		if (!c) {
			if (r > 0 && (errno == EAGAIN || errno == ECONNABORTED))
				continue;
			fprintf(stderr, "ipc-cat: accept: %s\n", errtext(errno));
			rc = EX_CONNECT;
			break;
		}
		struct ipc_cred cr;
		if (ipc_conn_peer_cred(c, &cr) == 0)
			note("connection from pid %d uid %d", (int)cr.pid, (int)cr.uid);
		else
			note("connection accepted");
		rc = session(c, stdin_open, in, &stop);
		note("connection closed (status %d)", rc);
	} while (g.keep && !stop);
	ipc_listener_close(l);
	return rc;
}

static int run_connect(struct buf *in, int *stdin_open)
{
	ipc_conn *c = ipc_connect(g.addr, &g.opt);
	if (!c) {
		fprintf(stderr, "ipc-cat: connect %s: %s\n", g.addr, errtext(errno));
		return errno == ETIMEDOUT ? EX_TIMEOUT : EX_CONNECT;
	}
	note("connected to %s (%s)", g.addr, ipc_conn_scheme(c));
	int stop = 0;
	return session(c, stdin_open, in, &stop);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"count", required_argument, 0, 'c'},   {"timeout", required_argument, 0, 't'},
		{"echo", no_argument, 0, 'e'},
		{"raw", no_argument, 0, 'r'},           {"hex", no_argument, 0, 'x'},
		{"mode", required_argument, 0, 'm'},    {"addr-file", required_argument, 0, 'a'},
		{"verbose", no_argument, 0, 'v'},       {"help", no_argument, 0, 'h'},
		{"close", no_argument, 0, 'C'},         {"max-size", required_argument, 0, 'M'},
		{"wait", no_argument, 0, 'W'},          {"keep-open", no_argument, 0, 'k'},
		{"keep", no_argument, 0, 'K'},
		{"retry", no_argument, 0, 'R'},         {"cert", required_argument, 0, 1},
		{"key", required_argument, 0, 2},       {"ca", required_argument, 0, 3},
		{"ca-dir", required_argument, 0, 4},    {"server-name", required_argument, 0, 5},
		{"verify", required_argument, 0, 6},    {"tls13", no_argument, 0, 7},
		{0, 0, 0, 0},
	};
	long long v;
	int wait_peer = 0;
	ipc_options_init(&g.opt);
	g.count = -1;
	g.timeout_ms = -1;
	int o;
	while ((o = getopt_long(argc, argv, "+k", longopts, NULL)) != -1) {
		switch (o) {
		case 'c':
			if (parse_long(optarg, 1, LLONG_MAX, 10, &g.count) < 0)
				goto bad;
			break;
		case 't':
			if (parse_long(optarg, 0, INT_MAX, 10, &v) < 0)
				goto bad;
			g.timeout_ms = (int)v;
			break;
		case 'm':
			if (parse_long(optarg, 0, 0777, 8, &v) < 0)
				goto bad;
			g.opt.mode = (unsigned)v;
			break;
		case 'M':
			if (parse_long(optarg, 1, (long long)IPC_MAX_MSG_LIMIT, 10, &v) < 0)
				goto bad;
			g.opt.max_msg_size = (size_t)v;
			break;
		case 'e': g.echo = 1; break;
		case 'K': g.keep = 1; break;
		case 'k': g.keep_open = 1; break;
		case 'r': g.raw = 1; break;
		case 'x': g.hex = 1; break;
		case 'a': g.addr_file = optarg; break;
		case 'v': g.verbose = 1; break;
		case 'C': g.close_on_eof = 1; break;
		case 'W': wait_peer = 1; break;
		case 'R': g.opt.connect_retry = 1; break;
		case 1: g.opt.tls_cert_file = optarg; break;
		case 2: g.opt.tls_key_file = optarg; break;
		case 3: g.opt.tls_ca_file = optarg; break;
		case 4: g.opt.tls_ca_dir = optarg; break;
		case 5: g.opt.tls_server_name = optarg; break;
		case 6:
			if (!strcmp(optarg, "peer"))
				g.opt.tls_verify = IPC_TLS_VERIFY_PEER;
			else if (!strcmp(optarg, "require"))
				g.opt.tls_verify = IPC_TLS_VERIFY_REQUIRE;
			else if (!strcmp(optarg, "none"))
				g.opt.tls_verify = IPC_TLS_VERIFY_NONE;
			else
				goto bad;
			break;
		case 7: g.opt.tls_min_version = IPC_TLS_1_3; break;
		case 'h': usage(stdout); return EX_OK;
		default: usage(stderr); return EX_USAGE;
		}
	}
	if (argc - optind != 2)
		goto bad;
	if (!strcmp(argv[optind], "listen"))
		g.listen = 1;
	else if (strcmp(argv[optind], "connect"))
		goto bad;
	g.addr = argv[optind + 1];
	if (((g.keep || g.keep_open) && !g.listen) || (g.keep && g.keep_open) || (wait_peer && g.close_on_eof))
		goto bad;
	/* like nc: connect closes when stdin ends, unless told to wait */
	if (!g.listen && !wait_peer && g.count < 0)
		g.close_on_eof = 1;
	if (g.timeout_ms >= 0)
		g.opt.connect_timeout_ms = g.timeout_ms ? g.timeout_ms : 1;

	signal(SIGPIPE, SIG_IGN);
	struct buf in = {0};
	int stdin_open = !g.echo;
	int rc = g.listen ? run_listen(&in, &stdin_open) : run_connect(&in, &stdin_open);
	free(in.p);
	return rc;
bad:
	usage(stderr);
	return EX_USAGE;
}
