/*
 * shm.c - the shm:name transport: shared-memory rings between processes.
 *
 * DESIGN
 *
 * Rendezvous.  The listener binds the Linux abstract unix socket
 * "\0libipc-shm/<name>" (SOCK_SEQPACKET).  Abstract names have no file and
 * vanish with the last descriptor, so a killed listener leaves nothing
 * behind.  Connecting to a name nobody listens on fails at once with
 * ECONNREFUSED.
 *
 * Memory has no name.  The CLIENT creates the whole connection in connect,
 * so connect never depends on the application calling accept:
 *   - a memfd (MFD_CLOEXEC, sealed against shrinking and growing, so the
 *     peer can never make our mapping fault with SIGBUS), fchmod'ed to
 *     opt.mode, holding one header page (state words, two ring control
 *     blocks) and two data rings (client->server, server->client), mapped
 *     MAP_SHARED and closed once mapped;
 *   - two wake socketpairs, one per ring (each side keeps one end);
 * and sends the memfd, the server's two socketpair ends and a small hello
 * (magic, version, ring capacities and sizes, region size) in one
 * SCM_RIGHTS packet.  Nothing ever appears under /dev/shm, and every
 * kernel object dies with the last process holding it: no leftovers by
 * construction, whatever gets killed when.  Per connection and side: 3
 * descriptors (rendezvous socket + 2 wake sockets).  The rendezvous socket
 * stays open for the life of the connection: the peer's death shows as
 * POLLHUP on it (and on the wake sockets); an orderly close also sets a
 * CLOSED word in the shared header before the sockets are closed.
 *
 * The listener side (pending and ready queues, the mode check, the
 * reply) and the client's connect, identity check and hello are the
 * shared rendezvous of lib/rendezvous.c (protocol in ipc_impl.h); this
 * file gives it the hello and its validation (shm_build): exact hello size
 * and fd count, magic, version, capacities and sizes in range and
 * consistent, rings no larger than our own capacity / max_msg_size allow
 * (IPC__RDV_LIMIT), the memfd a tmpfs file of exactly the size we compute,
 * opened read-write, sealed SHRINK|GROW|SEAL and not WRITE (a mapping that
 * fails refuses only that candidate), wake descriptors really unix stream
 * sockets (a pipe could raise SIGPIPE).  Our own sends hold at most our
 * capacity, whatever ring the client made.  The reply is one status byte
 * (enum ipc__rdv_status), which the data path reads like any other byte on
 * the socket and ignores when it is 0.
 *
 * Security.  Only the two processes hold the memfd; it has no name.  Who
 * may connect is ipc__mode_allows (lib/access.c) on SO_PEERCRED; who a
 * client trusts is ipc__listener_trusted, checked before the memfd is even
 * made.  A client whose listener runs under another uid waits in connect
 * (up to connect_timeout) for the listener's verdict, so a refusal is
 * reported by connect as EACCES; same-uid connects never wait.  The memfd
 * is sized only after RLIMIT_FSIZE is checked (EFBIG, never SIGXFSZ).
 *
 * Rings.  One single-producer single-consumer byte ring per direction,
 * capacity = opt.capacity of the client (the ring storage is rounded up to
 * a power of two, but at most `capacity` bytes are ever in flight).
 * Indices are free-running 64-bit counters.  head, tail and the two
 * "waiting" flags each sit on their own 128-byte line.  A frame is a
 * native-endian u32 length and the payload, unaligned, wrapping at the end
 * of the ring.  A frame that fits (4 + len <= capacity) is written whole
 * before head is published, so it becomes visible at once and complete.  A
 * bigger frame streams: the writer publishes it in pieces, the reader
 * reassembles it (straight into the caller's buffer, or into one malloc'd
 * buffer of exactly the announced length, checked against max_msg_size
 * BEFORE allocating; more is EPROTO) and delivers it only once complete.
 * Everything read from shared memory is copied to a local and validated
 * before use: head may only move forward and never exceed tail + capacity,
 * tail may only move forward and never pass head, lengths are checked
 * against max_msg_size.  A violation fails the connection with EPROTO; the
 * library never reads or writes outside its mapping and its own buffers.
 * Each side keeps its own index in private memory and never reads it back.
 *
 * Wake-ups.  No system call on the fast path: a sender copies, publishes
 * head and only if the receiver's waiting flag is set (Dekker pairing:
 * each side stores its own word then loads the other's) wakes it.  Every
 * send and receive publishes its index before returning, so nothing ever
 * stays unpublished.  The store-load fence the pairing needs is made
 * asymmetric when both processes are registered for membarrier(2)
 * GLOBAL_EXPEDITED (hdr->asym): the publishing side uses only a compiler
 * barrier, and the side about to sleep (or to arm a poller flag) calls
 * membarrier() after arming its flag; else both sides use seq_cst.  A
 * waiter first spins (SHM_SPIN polls of the index with a pause
 * instruction), then drains old wake-up bytes, sets its flag, fences,
 * re-checks, and sleeps in poll() on its end of the ring's wake socketpair
 * (one byte per wake-up, sent only while the flag is set) and on the
 * rendezvous socket.  Draining comes first because a waker takes the flag
 * (exchange to 0) some time after reading it: a late waker may take the
 * flag of the NEXT sleep, and its byte is then what ends that sleep.
 * Sleeping in poll() rather than on a futex means the peer's death
 * (POLLHUP, the kernel closes its ends) wakes a blocked call at once: the
 * bound for dead-peer detection of a blocked call is the
 * kernel's socket teardown, i.e. immediate, not a polling slice; an idle
 * blocked call makes no wake-ups at all.  Each wake socket end is read by
 * one role only (the receive path waits on the rx one, the send path on
 * the tx one), so one thread sending while another receives never steals a
 * wake-up.  A send to a peer that died while not blocked is detected when
 * the send would wait, and otherwise by a socket check every SHM_LIVE_EVERY
 * sends (one poll(2) amortised over them); the peer's orderly close is
 * seen at once (shared state word).  A half-written frame is never
 * published (small frames) or never delivered (streamed frames), so a
 * writer killed mid-message yields ECONNRESET, never a torn message.
 *
 * Readiness.  conn_fd is the rendezvous socket itself.  conn_ready computes
 * exact readiness from the rings (pulling the arrived part of a streamed
 * message into its buffer, so IPC_POLLIN means a receive would not block),
 * and when nothing is ready sets a "poller" bit in the waiting flags: the
 * peer then sends one wake-up byte on the socket, which conn_ready
 * consumes.  Readable: a complete message is waiting, or the end/error is
 * known.  Writable: nothing held and room for a frame of SHM_SMALL payload
 * bytes (as the stream transports), or the send would fail at once.  Two
 * threads must not call conn_ready on one handle at the same time.
 *
 * Threads: the send path (send, send_batch, flush, conn_ready(POLLOUT))
 * and the receive path (recv, recv_batch, conn_ready(POLLIN)) touch
 * disjoint state; what they share (socket status, peer gone) is atomic.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "ipc_impl.h"

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");

#define SHM_MAGIC 0x4c495053u     /* "LIPS" */
#define SHM_VERSION 2u
#define SHM_PREFIX "libipc-shm/"
#define SHM_NAME_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1 - (sizeof SHM_PREFIX - 1))
#define SHM_LINE 128
#define SHM_HDR_SIZE 4096         /* header + both control blocks, one page */
#define SHM_NFDS 3                /* memfd, the server's two wake sockets */
#define SHM_WAKE 0xfe             /* wake-up byte on the socket (readiness) */
#define SHM_W_SLEEP 1u            /* waiting flags: a thread sleeps in poll */
#define SHM_W_POLL 2u             /* ... a poller waits on the socket */
#define SHM_SPIN 2000             /* polls of the index before sleeping */
#define SHM_LIVE_EVERY 256u       /* sends between two socket checks (power of 2) */
#define SHM_SMALL 64              /* "small message" for IPC_POLLOUT (as frame.c) */
#define SHM_CHUNK ((uint64_t)64 << 10) /* publication step while streaming */

/* Per-side state words. */
#define SHM_ST_CLOSED 1u /* closed in order: everything sent is in the ring */
#define SHM_ST_FAILED 2u /* gave up on the connection (protocol error, ...) */

/* One direction's control block: every word on its own line. */
struct ring_ctl {
	_Alignas(SHM_LINE) _Atomic uint64_t head; /* written by the producer */
	_Alignas(SHM_LINE) _Atomic uint64_t tail; /* written by the consumer */
	_Alignas(SHM_LINE) _Atomic uint32_t cons_waiting; /* SHM_W_* of the consumer */
	_Alignas(SHM_LINE) _Atomic uint32_t prod_waiting; /* SHM_W_* of the producer */
};

/* Start of the region.  The layout is recomputed by each side from the
 * hello; these fields are informational except the state words. */
struct shm_hdr {
	uint32_t magic, version;
	uint64_t cap[2], rsize[2], region;
	_Alignas(SHM_LINE) _Atomic uint32_t state[2]; /* [0] client, [1] server */
	_Alignas(SHM_LINE) _Atomic uint32_t asym[2];   /* side registered for membarrier */
	_Alignas(SHM_LINE) struct ring_ctl ctl[2];     /* [0] c->s, [1] s->c */
};
_Static_assert(sizeof(struct shm_hdr) <= SHM_HDR_SIZE, "header must fit its page");

/* The hello the client sends with its descriptors. */
struct shm_hello {
	uint32_t magic;
	uint32_t version;
	uint64_t cap[2];   /* bytes that may be in flight per direction */
	uint64_t rsize[2]; /* ring storage sizes (powers of two >= cap) */
	uint64_t region;   /* memfd size */
};

struct shm_conn {
	struct ipc_conn base;
	int side; /* 0 client, 1 server */
	int sock; /* rendezvous socket: death, status, readiness wake-ups */
	int wfd_rx, wfd_tx; /* our ends of the wake socketpairs of each ring */
	unsigned char *map;
	size_t map_len;
	struct shm_hdr *hdr;
	struct ring_ctl *txc, *rxc;
	unsigned char *txd, *rxd;
	uint64_t tx_cap, tx_mask, rx_cap, rx_mask;
	_Atomic uint32_t *my_state, *peer_state;
	_Atomic uint32_t *peer_asym;
	int asym_me;  /* we issue membarrier() before sleeping; our process is registered */
	int tx_asym, rx_asym; /* ...and so does the peer: publish without a
	                         store-load fence (one cache per path) */
	struct ipc_cred cred;

	/* shared by the two paths */
	_Atomic int peer_gone; /* EOF/HUP seen on the socket */
	_Atomic int sock_err;  /* status byte / protocol error seen on the socket */

	/* send path */
	uint64_t tx_head, tx_tail;   /* our head; last validated tail */
	unsigned tx_count;
	int tx_err;
	unsigned char *held;         /* rest of a streamed frame (with header) */
	size_t held_len, held_off;

	/* receive path */
	uint64_t rx_tail, rx_head;   /* our tail; last validated head */
	int rx_err;
	int part_active;             /* a streamed frame is being reassembled */
	unsigned char *part_buf;     /* owned buffer, or NULL while in caller's */
	size_t part_len, part_got;
};

/* ---- small helpers ----------------------------------------------------- */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	atomic_signal_fence(memory_order_seq_cst);
#endif
}

static int fail_errno(int e)
{
	errno = e;
	return -1;
}

static void wake_send(int fd, unsigned char b)
{
	ssize_t r = send(fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)r;
}

static void wake_drain(int fd)
{
	unsigned char b[64];
	while (recv(fd, b, sizeof b, MSG_DONTWAIT) > 0)
		;
}

/* Wake whoever waits on a flag word: the sleeping thread (a byte on the
 * ring's wake socketpair) and/or the poller (a byte on the socket). */
static void wake_peer(struct shm_conn *c, _Atomic uint32_t *flag, int wfd)
{
	uint32_t w = atomic_exchange(flag, 0);
	if (w & SHM_W_SLEEP)
		wake_send(wfd, 1);
	if (w & SHM_W_POLL)
		wake_send(c->sock, SHM_WAKE);
}

/*
 * Asymmetric fences.  Publishing an index and then reading the other
 * side's waiting flag needs a store-load fence (Dekker); with it on every
 * message the producer stalls on each publication.  When both processes
 * are registered for MEMBARRIER_CMD_GLOBAL_EXPEDITED, the publishing side
 * uses only a compiler barrier and the side about to sleep (rare: after
 * spinning) pays for a membarrier() after arming its flag, which runs a
 * full fence on every CPU running a registered process.  Each side
 * advertises in hdr->asym that it does so; a side publishes without a
 * fence only once the peer's bit is set.  Without membarrier both fall
 * back to seq_cst.
 */
#ifndef MEMBARRIER_CMD_GLOBAL_EXPEDITED
#define MEMBARRIER_CMD_GLOBAL_EXPEDITED (1 << 1)
#define MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED (1 << 2)
#endif

static int asym_register(void)
{
#ifdef SYS_membarrier
	return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
#else
	return 0;
#endif
}

/* After arming a waiting flag, before re-checking the index.  0, or -1
 * when the fence could not be made (the caller then sleeps briefly). */
static int sleep_fence(struct shm_conn *c)
{
	/* the flag was armed with a seq_cst read-modify-write: that is the
	 * fence of the symmetric protocol */
	if (!c->asym_me)
		return 0;
#ifdef SYS_membarrier
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0)
		return 0;
#endif
	return -1;
}

/* May we publish without a store-load fence?  *cache belongs to the
 * calling path (send or receive). */
static inline int asym_ok(struct shm_conn *c, int *cache)
{
	if (__builtin_expect(*cache, 1))
		return 1;
	if (c->asym_me && atomic_load_explicit(c->peer_asym, memory_order_relaxed))
		*cache = 1; /* never cleared: set once by a registered peer */
	return *cache;
}

/* Publish an index, then wake the other side if its flag is armed. */
static inline void publish(struct shm_conn *c, int *cache, _Atomic uint64_t *idx, uint64_t v,
			   _Atomic uint32_t *flag, int wfd)
{
	uint32_t w;
	if (asym_ok(c, cache)) {
		atomic_store_explicit(idx, v, memory_order_release);
		atomic_signal_fence(memory_order_seq_cst);
		w = atomic_load_explicit(flag, memory_order_relaxed);
	} else {
		atomic_store_explicit(idx, v, memory_order_seq_cst);
		w = atomic_load_explicit(flag, memory_order_seq_cst);
	}
	if (__builtin_expect(w != 0, 0))
		wake_peer(c, flag, wfd);
}

/* Wake every sleeper of the peer (we close or fail). */
static void wake_all(struct shm_conn *c)
{
	atomic_fetch_or(&c->txc->cons_waiting, SHM_W_SLEEP);
	wake_peer(c, &c->txc->cons_waiting, c->wfd_tx);
	atomic_fetch_or(&c->rxc->prod_waiting, SHM_W_SLEEP);
	wake_peer(c, &c->rxc->prod_waiting, c->wfd_rx);
}

static uint64_t pow2_at_least(uint64_t v)
{
	uint64_t p = 4096;
	while (p < v)
		p <<= 1;
	return p;
}

static size_t region_size(uint64_t r0, uint64_t r1)
{
	return (size_t)(SHM_HDR_SIZE + r0 + r1);
}

/* Copy n bytes out of / into a ring at free-running index idx. */
static void ring_get(const unsigned char *d, uint64_t mask, uint64_t idx, void *dst, size_t n)
{
	size_t off = (size_t)(idx & mask), first = (size_t)(mask + 1) - off;
	if (n == 0)
		return;
	if (first >= n) {
		memcpy(dst, d + off, n);
	} else {
		memcpy(dst, d + off, first);
		memcpy((unsigned char *)dst + first, d, n - first);
	}
}

static void ring_put(unsigned char *d, uint64_t mask, uint64_t idx, const void *src, size_t n)
{
	size_t off = (size_t)(idx & mask), first = (size_t)(mask + 1) - off;
	if (n == 0)
		return;
	if (first >= n) {
		memcpy(d + off, src, n);
	} else {
		memcpy(d + off, src, first);
		memcpy(d, (const unsigned char *)src + first, n - first);
	}
}

/* ---- peer state -------------------------------------------------------- */

/*
 * Read one status byte.  1 and *b, 0 at EOF, -1 with errno.  A listener
 * that closes a socket with our hello unread makes the kernel report
 * ECONNRESET once before the queued status byte: look again after it.
 */
static int status_read(int fd, unsigned char *b)
{
	int reset = 0;
	for (;;) {
		ssize_t r = recv(fd, b, 1, MSG_DONTWAIT);
		if (r == 1)
			return 1;
		if (r == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == ECONNRESET && !reset) {
			reset = 1;
			continue;
		}
		if (reset && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		return -1;
	}
}

/* Take everything waiting on the socket (wake-up bytes, status bytes,
 * EOF) without blocking.  do_poll: look first (cheap when idle). */
static void sock_check(struct shm_conn *c, int do_poll)
{
	if (do_poll) {
		struct pollfd p = {.fd = c->sock, .events = POLLIN};
		if (poll(&p, 1, 0) <= 0 || !p.revents)
			return;
	}
	for (int i = 0; i < 64; i++) {
		unsigned char b;
		int r = status_read(c->sock, &b);
		if (r == 1) {
			if (b == SHM_WAKE)
				continue;
			if (c->side == 1) /* a client sends nothing else after the hello */
				atomic_store(&c->sock_err, EPROTO);
			else if (b != 0)
				atomic_store(&c->sock_err, ipc__rdv_status_errno(b));
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			atomic_store(&c->peer_gone, 1);
		break;
	}
}

/* Nonzero when the peer will not produce or consume anything more. */
static int peer_done(struct shm_conn *c)
{
	return atomic_load(c->peer_state) != 0 || atomic_load(&c->peer_gone) ||
	       atomic_load(&c->sock_err) != 0;
}

/* Our side gives up on the connection: tell the peer. */
static void conn_fail(struct shm_conn *c, int e)
{
	if (!c->rx_err)
		c->rx_err = e;
	if (!c->tx_err)
		c->tx_err = e;
	atomic_fetch_or(c->my_state, SHM_ST_FAILED);
	wake_all(c);
}

/* Test hook (ipc__shm_test_sleep_hook): called by a sleeper right after
 * arming its flag.  NULL outside tests. */
static void (*sleep_hook)(ipc_conn *c, void *arg);
static void *sleep_hook_arg;

/*
 * Sleep until the peer publishes (a byte on our end of the ring's wake
 * socketpair, sent only while our waiting flag is set), the peer goes away
 * (POLLHUP on that socketpair or on the socket: immediate), or deadline.
 * ready(c) is re-checked after arming the flag.  Returns 0: the caller
 * re-checks everything.
 */
static int shm_sleep(struct shm_conn *c, int rx, int (*ready)(struct shm_conn *), int64_t deadline)
{
	for (int i = 0; i < SHM_SPIN; i++) {
		if (ready(c))
			return 0;
		cpu_relax();
	}
	_Atomic uint32_t *flag = rx ? &c->rxc->cons_waiting : &c->txc->prod_waiting;
	int wfd = rx ? c->wfd_rx : c->wfd_tx;
	/* Drain BEFORE arming: a waker that read our flag during an earlier
	 * sleep may exchange it to 0 only now, after we armed it again; its
	 * byte must then still be there to end this poll, or the next
	 * publication sees no flag and we sleep to the deadline. */
	wake_drain(wfd);
	atomic_fetch_or(flag, SHM_W_SLEEP);
	int fenced = sleep_fence(c) == 0;
	if (sleep_hook)
		sleep_hook(&c->base, sleep_hook_arg);
	if (!ready(c) && !peer_done(c)) {
		struct pollfd p[2] = {{.fd = wfd, .events = POLLIN}, {.fd = c->sock, .events = POLLRDHUP}};
		int ms = ipc__remaining_ms(deadline);
		if (!fenced && (ms < 0 || ms > 1))
			ms = 1; /* no fence: a wake-up may be missed, look again soon */
		int r = poll(p, 2, ms);
		if (r > 0 && ((p[0].revents & (POLLHUP | POLLERR)) || p[1].revents)) {
			sock_check(c, 0);
			if (p[0].revents & (POLLHUP | POLLERR))
				atomic_store(&c->peer_gone, 1);
		}
	}
	atomic_fetch_and(flag, ~SHM_W_SLEEP);
	return 0;
}

static int deadline_passed(int64_t deadline)
{
	return deadline == IPC__NOW || (deadline != IPC__FOREVER && ipc__now() >= deadline);
}

/* ---- receive path ------------------------------------------------------ */

/* Load and validate the peer's head.  0 or -1 EPROTO (connection failed). */
static int rx_refresh(struct shm_conn *c)
{
	uint64_t h = atomic_load_explicit(&c->rxc->head, memory_order_acquire);
	if (h < c->rx_head || h - c->rx_tail > c->rx_cap) {
		conn_fail(c, EPROTO);
		return fail_errno(EPROTO);
	}
	c->rx_head = h;
	return 0;
}

static int rx_moved(struct shm_conn *c)
{
	return atomic_load(&c->rxc->head) != c->rx_head;
}

/* Publish our tail and wake a sleeping producer. */
static inline void rx_publish(struct shm_conn *c)
{
	publish(c, &c->rx_asym, &c->rxc->tail, c->rx_tail, &c->rxc->prod_waiting, c->wfd_rx);
}

/*
 * Not enough data: decide between "wait" (-2), "look again" (-3) and the
 * end of the stream (-1 EPIPE / ECONNRESET / status error, sticky).
 */
static ssize_t rx_short(struct shm_conn *c, uint64_t need)
{
	if (!peer_done(c))
		return -2;
	uint64_t before = c->rx_head;
	if (rx_refresh(c) < 0)
		return -1;
	if (c->rx_head != before && c->rx_head - c->rx_tail >= need)
		return -3;
	int se = atomic_load(&c->sock_err);
	uint32_t st = atomic_load(c->peer_state);
	if (se)
		c->rx_err = se;
	else if ((st & SHM_ST_CLOSED) && !(st & SHM_ST_FAILED) && c->rx_head == c->rx_tail &&
		 !c->part_active)
		c->rx_err = EPIPE;
	else
		c->rx_err = ECONNRESET;
	errno = c->rx_err;
	return -1;
}

/* Copy what has arrived of a streamed frame into dst.  0 when complete,
 * -2 would wait, -1 error (sticky). */
static ssize_t rx_stream_fill(struct shm_conn *c, unsigned char *dst)
{
	ssize_t r = 0;
	while (c->part_got < c->part_len) {
		uint64_t avail = c->rx_head - c->rx_tail;
		if (avail == 0) {
			if (rx_refresh(c) < 0) {
				r = -1;
				break;
			}
			avail = c->rx_head - c->rx_tail;
		}
		if (avail == 0) {
			r = rx_short(c, 1);
			if (r == -3)
				continue;
			break;
		}
		size_t take = c->part_len - c->part_got;
		if ((uint64_t)take > avail)
			take = (size_t)avail;
		ring_get(c->rxd, c->rx_mask, c->rx_tail, dst + c->part_got, take);
		c->part_got += take;
		c->rx_tail += take;
		rx_publish(c); /* let the writer go on */
	}
	return r;
}

/* Our own buffer for a streamed frame (bounded by max_msg_size already). */
static int rx_part_alloc(struct shm_conn *c)
{
	if (c->part_buf)
		return 0;
	c->part_buf = malloc(c->part_len ? c->part_len : 1);
	return c->part_buf ? 0 : fail_errno(ENOMEM);
}

/* Continue a streamed frame, into the caller's buffer when it can take it
 * whole, else into our own; deliver it once complete. */
static ssize_t rx_stream(struct shm_conn *c, unsigned char *ubuf, size_t len, void **allocp)
{
	if (!allocp && len < c->part_len)
		return fail_errno(EMSGSIZE);
	if (allocp && rx_part_alloc(c) < 0)
		return -1;
	ssize_t r = rx_stream_fill(c, c->part_buf ? c->part_buf : ubuf);
	if (r < 0)
		return r;
	size_t n = c->part_len;
	if (allocp) {
		*allocp = c->part_buf;
	} else if (c->part_buf) {
		memcpy(ubuf, c->part_buf, n);
		free(c->part_buf);
	}
	c->part_buf = NULL;
	c->part_active = 0;
	c->part_len = c->part_got = 0;
	return (ssize_t)n;
}

/* One attempt: >= 0 delivered, -1 error, -2 would wait. */
static ssize_t rx_try(struct shm_conn *c, void *buf, size_t len, void **allocp, int may_stream)
{
	for (;;) {
		if (c->rx_err)
			return fail_errno(c->rx_err);
		if (c->part_active)
			return rx_stream(c, buf, len, allocp);
		uint64_t avail = c->rx_head - c->rx_tail;
		if (avail < 4) {
			if (rx_refresh(c) < 0)
				return -1;
			avail = c->rx_head - c->rx_tail;
			if (avail < 4) {
				ssize_t r = rx_short(c, 4);
				if (r == -3)
					continue;
				return r;
			}
		}
		uint32_t l32;
		ring_get(c->rxd, c->rx_mask, c->rx_tail, &l32, 4);
		size_t l = l32;
		if (l > c->base.opt.max_msg_size) {
			conn_fail(c, EPROTO);
			return fail_errno(EPROTO);
		}
		if ((uint64_t)l + 4 > c->rx_cap) {
			if (!may_stream)
				return -2;
			if (!allocp && len < l)
				return fail_errno(EMSGSIZE);
			c->part_active = 1;
			c->part_len = l;
			c->part_got = 0;
			c->part_buf = NULL;
			c->rx_tail += 4;
			continue;
		}
		if (avail < 4 + (uint64_t)l) {
			if (rx_refresh(c) < 0)
				return -1;
			avail = c->rx_head - c->rx_tail;
			if (avail < 4 + (uint64_t)l) {
				ssize_t r = rx_short(c, 4 + (uint64_t)l);
				if (r == -3)
					continue;
				return r;
			}
		}
		if (!allocp && len < l)
			return fail_errno(EMSGSIZE);
		void *dst = buf;
		if (allocp) {
			dst = malloc(l ? l : 1);
			if (!dst)
				return fail_errno(ENOMEM);
			*allocp = dst;
		}
		ring_get(c->rxd, c->rx_mask, c->rx_tail + 4, dst, l);
		c->rx_tail += 4 + (uint64_t)l;
		return (ssize_t)l;
	}
}

/* A streamed frame left half-way in the caller's buffer moves to our own. */
static int rx_park(struct shm_conn *c, const void *ubuf)
{
	if (!c->part_active || c->part_buf)
		return 0;
	c->part_buf = malloc(c->part_len ? c->part_len : 1);
	if (!c->part_buf) {
		conn_fail(c, ENOMEM); /* its wake-ups may change errno */
		return fail_errno(ENOMEM);
	}
	if (c->part_got)
		memcpy(c->part_buf, ubuf, c->part_got);
	return 0;
}

static ssize_t shm_recv(struct ipc_conn *cc, void *buf, size_t len, void **allocp, int64_t deadline)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	for (;;) {
		ssize_t r = rx_try(c, buf, len, allocp, 1);
		if (r >= 0) {
			if (!c->part_active)
				rx_publish(c);
			return r;
		}
		if (r == -1) {
			int e = errno;
			if (e != EMSGSIZE && e != ENOMEM && !c->rx_err)
				rx_park(c, buf);
			errno = e;
			return -1;
		}
		deadline = ipc__anchor(deadline); /* from the first wait on */
		if (deadline == IPC__NOW) {
			sock_check(c, 1);
			if (peer_done(c))
				continue;
		}
		if (deadline_passed(deadline)) {
			if (rx_park(c, buf) < 0)
				return -1;
			return ipc__wouldblock(deadline);
		}
		if (shm_sleep(c, 1, rx_moved, deadline) < 0) {
			int e = errno;
			rx_park(c, buf);
			return fail_errno(e);
		}
	}
}

static ssize_t shm_recv_batch(struct ipc_conn *cc, struct iovec *msgs, size_t n, int64_t deadline)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	ssize_t r = shm_recv(cc, msgs[0].iov_base, msgs[0].iov_len, NULL, deadline);
	if (r < 0)
		return -1;
	msgs[0].iov_len = (size_t)r;
	size_t i = 1;
	for (; i < n; i++) {
		if (c->part_active)
			break;
		r = rx_try(c, msgs[i].iov_base, msgs[i].iov_len, NULL, 0);
		if (r < 0)
			break; /* shows again on the next call */
		msgs[i].iov_len = (size_t)r;
	}
	if (i > 1)
		rx_publish(c);
	return (ssize_t)i;
}

/* ---- send path --------------------------------------------------------- */

/* Load and validate the peer's tail.  0 or -1 EPROTO. */
static int tx_refresh(struct shm_conn *c)
{
	uint64_t t = atomic_load_explicit(&c->txc->tail, memory_order_acquire);
	if (t < c->tx_tail || t > c->tx_head) {
		conn_fail(c, EPROTO);
		return fail_errno(EPROTO);
	}
	c->tx_tail = t;
	return 0;
}

static int tx_moved(struct shm_conn *c)
{
	return atomic_load(&c->txc->tail) != c->tx_tail;
}

static uint64_t tx_free(struct shm_conn *c)
{
	return c->tx_cap - (c->tx_head - c->tx_tail);
}

static inline void tx_publish(struct shm_conn *c)
{
	publish(c, &c->tx_asym, &c->txc->head, c->tx_head, &c->txc->cons_waiting, c->wfd_tx);
}

/* The send path cannot go on: sticky error. */
static int tx_dead(struct shm_conn *c)
{
	int se = atomic_load(&c->sock_err);
	if (se == EACCES || se == EPROTO)
		c->tx_err = se;
	else
		c->tx_err = EPIPE;
	return fail_errno(c->tx_err);
}

/* Wait until need bytes are free.  0, or -1 (EAGAIN/ETIMEDOUT/EPIPE/...). */
static int tx_room(struct shm_conn *c, uint64_t need, int64_t deadline)
{
	for (;;) {
		if (c->tx_err)
			return fail_errno(c->tx_err);
		if (peer_done(c))
			return tx_dead(c);
		if (tx_free(c) >= need)
			return 0;
		if (tx_refresh(c) < 0)
			return -1;
		if (tx_free(c) >= need)
			return 0;
		if (deadline == IPC__NOW)
			sock_check(c, 1);
		else if (!deadline_passed(deadline) && shm_sleep(c, 0, tx_moved, deadline) < 0)
			return -1;
		if (peer_done(c))
			return tx_dead(c);
		if (deadline_passed(deadline)) {
			if (tx_refresh(c) < 0)
				return -1;
			if (tx_free(c) >= need)
				return 0;
			return ipc__wouldblock(deadline);
		}
	}
}

/* Push as much of the held rest as the deadline allows.  0 when all out. */
static int tx_push_held(struct shm_conn *c, int64_t deadline)
{
	while (c->held) {
		if (tx_room(c, 1, deadline) < 0)
			return -1;
		uint64_t n = tx_free(c);
		if (n > SHM_CHUNK)
			n = SHM_CHUNK;
		if (n > c->held_len - c->held_off)
			n = c->held_len - c->held_off;
		ring_put(c->txd, c->tx_mask, c->tx_head, c->held + c->held_off, (size_t)n);
		c->tx_head += n;
		c->held_off += (size_t)n;
		tx_publish(c);
		if (c->held_off == c->held_len) {
			free(c->held);
			c->held = NULL;
			c->held_len = c->held_off = 0;
		}
	}
	return 0;
}

/* Cursor over an iovec. */
struct iov_cur {
	const struct iovec *iov;
	int cnt, i;
	size_t off;
};

static void cur_put(struct shm_conn *c, struct iov_cur *cu, size_t n)
{
	while (n > 0) {
		while (cu->iov[cu->i].iov_len == cu->off) {
			cu->i++;
			cu->off = 0;
		}
		size_t k = cu->iov[cu->i].iov_len - cu->off;
		if (k > n)
			k = n;
		ring_put(c->txd, c->tx_mask, c->tx_head, (const unsigned char *)cu->iov[cu->i].iov_base + cu->off, k);
		c->tx_head += k;
		cu->off += k;
		n -= k;
	}
}

/* Write one frame that fits, without waiting (room checked by caller). */
static void tx_frame(struct shm_conn *c, const struct iovec *iov, int iovcnt, size_t total)
{
	uint32_t l32 = (uint32_t)total;
	ring_put(c->txd, c->tx_mask, c->tx_head, &l32, 4);
	c->tx_head += 4;
	struct iov_cur cu = {iov, iovcnt, 0, 0};
	cur_put(c, &cu, total);
}

/* Stream a frame larger than the ring. */
static int tx_stream(struct shm_conn *c, const struct iovec *iov, int iovcnt, size_t total, int64_t deadline)
{
	/* nothing is sent unless the header and a first piece fit */
	if (tx_room(c, 4 + 1, deadline) < 0)
		return -1;
	uint32_t l32 = (uint32_t)total;
	ring_put(c->txd, c->tx_mask, c->tx_head, &l32, 4);
	c->tx_head += 4;
	struct iov_cur cu = {iov, iovcnt, 0, 0};
	size_t left = total;
	while (left > 0) {
		uint64_t n = tx_free(c);
		if (n == 0) {
			if (tx_room(c, 1, deadline) < 0) {
				int e = errno;
				if (e != EAGAIN && e != ETIMEDOUT)
					return -1;
				/* started flowing: hold the rest, accepted */
				unsigned char *h = malloc(left);
				if (!h) {
					conn_fail(c, ENOMEM);
					return -1;
				}
				size_t k = 0;
				while (k < left) {
					while (cu.iov[cu.i].iov_len == cu.off) {
						cu.i++;
						cu.off = 0;
					}
					size_t m = cu.iov[cu.i].iov_len - cu.off;
					if (m > left - k)
						m = left - k;
					memcpy(h + k, (const unsigned char *)cu.iov[cu.i].iov_base + cu.off, m);
					cu.off += m;
					k += m;
				}
				c->held = h;
				c->held_len = left;
				c->held_off = 0;
				return 0;
			}
			n = tx_free(c);
		}
		if (n > SHM_CHUNK)
			n = SHM_CHUNK;
		if (n > left)
			n = left;
		cur_put(c, &cu, (size_t)n);
		left -= (size_t)n;
		tx_publish(c);
	}
	return 0;
}

/* Checks common to every send: sticky errors, peer gone, held data. */
static int tx_begin(struct shm_conn *c, int64_t deadline)
{
	if (c->tx_err)
		return fail_errno(c->tx_err);
	if ((c->tx_count++ & (SHM_LIVE_EVERY - 1)) == 0)
		sock_check(c, 1);
	if (peer_done(c))
		return tx_dead(c);
	if (c->held && tx_push_held(c, deadline) < 0)
		return -1;
	return 0;
}

/* Write one frame of a single buffer that fits (room checked by caller). */
static inline void tx_frame1(struct shm_conn *c, const void *buf, size_t len)
{
	size_t off = (size_t)(c->tx_head & c->tx_mask);
	uint32_t l32 = (uint32_t)len;
	if (__builtin_expect(off + 4 + len <= (size_t)c->tx_mask + 1, 1)) {
		memcpy(c->txd + off, &l32, 4);
		memcpy(c->txd + off + 4, buf, len);
	} else {
		ring_put(c->txd, c->tx_mask, c->tx_head, &l32, 4);
		ring_put(c->txd, c->tx_mask, c->tx_head + 4, buf, len);
	}
	c->tx_head += 4 + (uint64_t)len;
}

/* The common case without a system call or a wait: no error, nothing
 * held, no liveness check due, peer alive, room for the whole frame
 * (refreshing the peer's tail once if needed).  1 sent, 0 take the slow
 * path (nothing done). */
static inline int tx_fast(struct shm_conn *c, const void *buf, size_t len)
{
	uint64_t need = 4 + (uint64_t)len;
	if (c->tx_err || c->held || (c->tx_count & (SHM_LIVE_EVERY - 1)) == 0 || need > c->tx_cap)
		return 0;
	if (atomic_load_explicit(c->peer_state, memory_order_relaxed) || atomic_load_explicit(&c->peer_gone, memory_order_relaxed) ||
	    atomic_load_explicit(&c->sock_err, memory_order_relaxed))
		return 0;
	if (tx_free(c) < need) {
		uint64_t t = atomic_load_explicit(&c->txc->tail, memory_order_acquire);
		if (t < c->tx_tail || t > c->tx_head)
			return 0; /* the slow path reports it */
		c->tx_tail = t;
		if (tx_free(c) < need)
			return 0;
	}
	c->tx_count++;
	tx_frame1(c, buf, len);
	return 1;
}

static int shm_send(struct ipc_conn *cc, const struct iovec *iov, int iovcnt, size_t total, int64_t deadline)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	if (iovcnt == 1 && tx_fast(c, iov[0].iov_base, total)) {
		tx_publish(c);
		return 0;
	}
	deadline = ipc__anchor(deadline); /* the slow path may wait */
	if (total + 4 > c->tx_cap && deadline == IPC__NOW)
		return fail_errno(EMSGSIZE);
	if (tx_begin(c, deadline) < 0)
		return -1;
	if (total + 4 > c->tx_cap)
		return tx_stream(c, iov, iovcnt, total, deadline);
	if (tx_room(c, total + 4, deadline) < 0)
		return -1;
	tx_frame(c, iov, iovcnt, total);
	tx_publish(c);
	return 0;
}

static ssize_t shm_send_batch(struct ipc_conn *cc, const struct iovec *msgs, size_t n, int64_t deadline)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	if (shm_send(cc, &msgs[0], 1, msgs[0].iov_len, deadline) < 0)
		return -1;
	size_t i = 1;
	uint64_t pub = c->tx_head;
	for (; i < n; i++) {
		size_t l = msgs[i].iov_len;
		if (tx_free(c) < l + 4 && c->tx_head != pub) {
			tx_publish(c); /* let the reader drain while we look */
			pub = c->tx_head;
		}
		if (!tx_fast(c, msgs[i].iov_base, l))
			break;
	}
	if (c->tx_head != pub)
		tx_publish(c);
	return (ssize_t)i;
}

static int shm_flush(struct ipc_conn *cc, int64_t deadline)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	if (!c->held)
		return 0;
	if (c->tx_err)
		return fail_errno(c->tx_err);
	return tx_push_held(c, ipc__anchor(deadline));
}

/* ---- readiness, credentials, close ------------------------------------- */

static int shm_conn_fd(const struct ipc_conn *cc)
{
	return ((const struct shm_conn *)cc)->sock;
}

/* Would a receive not wait?  Pulls what has arrived of a streamed frame
 * into our buffer, so that only a complete message reports readable. */
static int rx_ready(struct shm_conn *c)
{
	if (c->rx_err)
		return 1;
	if (!c->part_active) {
		if (rx_refresh(c) < 0)
			return 1;
		uint64_t avail = c->rx_head - c->rx_tail;
		if (avail < 4)
			return 0;
		uint32_t l32;
		ring_get(c->rxd, c->rx_mask, c->rx_tail, &l32, 4);
		if (l32 > c->base.opt.max_msg_size)
			return 1; /* the receive reports it */
		if ((uint64_t)l32 + 4 <= c->rx_cap)
			return avail >= 4 + (uint64_t)l32;
		c->part_active = 1;
		c->part_len = l32;
		c->part_got = 0;
		c->part_buf = NULL;
		c->rx_tail += 4;
	}
	if (c->part_got == c->part_len && c->part_buf)
		return 1;
	if (rx_part_alloc(c) < 0) {
		conn_fail(c, ENOMEM);
		return 1;
	}
	ssize_t r = rx_stream_fill(c, c->part_buf);
	return r != -2;
}

static int tx_ready(struct shm_conn *c)
{
	if (c->tx_err)
		return 1;
	if (c->held) {
		if (tx_push_held(c, IPC__NOW) < 0)
			return errno != EAGAIN;
		if (c->held)
			return 0;
	}
	uint64_t small = c->tx_cap < SHM_SMALL + 4 ? c->tx_cap : SHM_SMALL + 4;
	if (tx_free(c) >= small)
		return 1;
	if (tx_refresh(c) < 0)
		return 1;
	return tx_free(c) >= small;
}

static int shm_conn_ready(struct ipc_conn *cc, int events, short *pollev)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	int res = 0;
	sock_check(c, 1); /* takes our wake-up bytes too */
	int done = peer_done(c);
	if ((events & IPC_POLLIN) && (rx_ready(c) || done))
		res |= IPC_POLLIN;
	if ((events & IPC_POLLOUT) && (tx_ready(c) || done))
		res |= IPC_POLLOUT;
	if (done)
		res |= IPC_POLLHUP;
	if (c->rx_err || c->tx_err || atomic_load(&c->sock_err))
		res |= IPC_POLLERR;
	if (res)
		return res;
	/* ask the peer for a wake-up byte, then look once more */
	if (events & IPC_POLLIN)
		atomic_fetch_or(&c->rxc->cons_waiting, SHM_W_POLL);
	if (events & IPC_POLLOUT)
		atomic_fetch_or(&c->txc->prod_waiting, SHM_W_POLL);
	if (sleep_fence(c) < 0) {
		/* no fence: a wake-up byte may be missed; report ready so
		 * the caller asks again instead of sleeping on the socket */
		return events & (IPC_POLLIN | IPC_POLLOUT);
	}
	if ((events & IPC_POLLIN) && rx_ready(c))
		res |= IPC_POLLIN;
	if ((events & IPC_POLLOUT) && tx_ready(c))
		res |= IPC_POLLOUT;
	if (peer_done(c))
		res |= IPC_POLLHUP | (events & (IPC_POLLIN | IPC_POLLOUT));
	*pollev = POLLIN;
	return res;
}

static int shm_peer_cred(const struct ipc_conn *cc, struct ipc_cred *cred)
{
	*cred = ((const struct shm_conn *)cc)->cred;
	return 0;
}

static void conn_free(struct shm_conn *c)
{
	ipc__close_fd(c->sock);
	ipc__close_fd(c->wfd_rx);
	ipc__close_fd(c->wfd_tx);
	if (c->map)
		munmap(c->map, c->map_len);
	free(c->held);
	free(c->part_buf);
	free(c);
}

static int shm_close(struct ipc_conn *cc, int64_t linger_deadline)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	int ret = 0, e = 0;
	if (c->held && !c->tx_err && tx_push_held(c, linger_deadline) < 0) {
		e = errno;
		ret = -1;
	}
	if (!c->held && !c->rx_err && !c->tx_err)
		atomic_fetch_or(c->my_state, SHM_ST_CLOSED);
	else
		atomic_fetch_or(c->my_state, SHM_ST_FAILED);
	wake_all(c);
	shutdown(c->sock, SHUT_RDWR);
	conn_free(c);
	if (ret < 0)
		errno = e;
	return ret;
}

/* ---- building a connection -------------------------------------------- */

static struct shm_conn *conn_alloc(void)
{
	struct shm_conn *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->sock = c->wfd_rx = c->wfd_tx = -1;
	return c;
}

/* Point the connection at its mapping and make its epoll set. */
static int conn_setup(struct shm_conn *c, const struct shm_hello *h)
{
	int tx = c->side == 0 ? 0 : 1, rx = 1 - tx;
	c->hdr = (struct shm_hdr *)c->map;
	c->txc = &c->hdr->ctl[tx];
	c->rxc = &c->hdr->ctl[rx];
	c->txd = c->map + SHM_HDR_SIZE + (tx ? h->rsize[0] : 0);
	c->rxd = c->map + SHM_HDR_SIZE + (rx ? h->rsize[0] : 0);
	c->tx_cap = h->cap[tx];
	c->tx_mask = h->rsize[tx] - 1;
	c->rx_cap = h->cap[rx];
	c->rx_mask = h->rsize[rx] - 1;
	c->my_state = &c->hdr->state[c->side];
	c->peer_state = &c->hdr->state[1 - c->side];
	c->peer_asym = &c->hdr->asym[1 - c->side];
	c->asym_me = asym_register();
	if (c->asym_me)
		atomic_store(&c->hdr->asym[c->side], 1);
	return 0;
}

/* ---- rendezvous (the shared part is lib/rendezvous.c) ------------------ */

struct shm_listener {
	struct ipc__rdv_listener rdv; /* first: the shared listener */
	uint64_t tx_cap_max;          /* our capacity: what our sends may hold */
	uint64_t ring_max;            /* largest ring storage a client may make
	                                 us map (capacity or max_msg_size + 4,
	                                 rounded up to a power of two) */
	char name[SHM_NAME_MAX + 1];
};

/* Build the socket address of name; ENAMETOOLONG / EINVAL. */
static int shm_sockaddr(const char *name, struct sockaddr_un *sa, socklen_t *salen)
{
	size_t n = strlen(name);
	if (n == 0)
		return fail_errno(EINVAL);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch <= 0x20 || ch >= 0x7f || ch == '/')
			return fail_errno(EINVAL);
	}
	return ipc__rdv_addr(SHM_PREFIX, NULL, name, sa, salen);
}

/* The listener's reply: one status byte. */
static void shm_reply(struct ipc__rdv_listener *l, int sock, enum ipc__rdv_status status)
{
	unsigned char b = (unsigned char)status;
	ssize_t r = send(sock, &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)r;
}

/* The listener's verdict as errno (0: accepted), waiting until deadline. */
static int shm_verdict(int sock, int64_t deadline)
{
	unsigned char b;
	if (ipc__rdv_peek_reply(sock, &b, 1, deadline) < 0)
		return errno;
	return ipc__rdv_status_errno(b);
}

/* A memfd of size bytes we may size without SIGXFSZ (RLIMIT_FSIZE applies
 * to ftruncate of a memfd and would kill the process): EFBIG instead. */
static int memfd_make(uint64_t size, unsigned mode)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && size > (uint64_t)rl.rlim_cur)
		return fail_errno(EFBIG);
	int fd = memfd_create("libipc-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -1;
	if (fchmod(fd, mode & 0666) < 0 || ftruncate(fd, (off_t)size) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		ipc__close_fd(fd);
		return -1;
	}
	return fd;
}

static struct ipc_conn *shm_connect(const char *name, const struct ipc_options *o, int64_t deadline)
{
	struct sockaddr_un sa;
	socklen_t salen;
	struct shm_conn *c = NULL;
	int memfd = -1, e, p0[2] = {-1, -1}, p1[2] = {-1, -1};
	if (shm_sockaddr(name, &sa, &salen) < 0)
		return NULL;
	c = conn_alloc();
	if (!c)
		return NULL;
	c->side = 0;
	/* who listens is checked before anything is made or sent */
	c->sock = ipc__rdv_connect(&sa, salen, o, deadline, &c->cred);
	if (c->sock < 0)
		goto fail;

	struct shm_hello h = {.magic = SHM_MAGIC, .version = SHM_VERSION};
	h.cap[0] = h.cap[1] = o->capacity;
	h.rsize[0] = h.rsize[1] = pow2_at_least(o->capacity);
	h.region = region_size(h.rsize[0], h.rsize[1]);
	c->map_len = (size_t)h.region;
	memfd = memfd_make(h.region, o->mode);
	if (memfd < 0)
		goto fail;
	void *p = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (p == MAP_FAILED)
		goto fail;
	c->map = p;
	struct shm_hdr *hdr = (struct shm_hdr *)c->map;
	hdr->magic = SHM_MAGIC;
	hdr->version = SHM_VERSION;
	for (int i = 0; i < 2; i++) {
		hdr->cap[i] = h.cap[i];
		hdr->rsize[i] = h.rsize[i];
	}
	hdr->region = h.region;

	/* wake socketpairs: [0] ours, [1] the server's end */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, p0) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, p1) < 0)
		goto fail;
	c->wfd_tx = p0[0]; /* c->s ring: we produce */
	c->wfd_rx = p1[0]; /* s->c ring: we consume */
	p0[0] = p1[0] = -1;
	if (conn_setup(c, &h) < 0)
		goto fail;
	int fds[SHM_NFDS] = {memfd, p0[1], p1[1]};
	if (ipc__rdv_send_hello(c->sock, &h, sizeof h, fds, SHM_NFDS, deadline) < 0) {
		if (errno == ECONNREFUSED) { /* refused early: its reason, if it gave one */
			int v = shm_verdict(c->sock, IPC__NOW);
			errno = v && v != EAGAIN ? v : ECONNREFUSED;
		}
		goto fail;
	}
	ipc__close_fd(memfd);
	ipc__close_fd(p0[1]);
	ipc__close_fd(p1[1]);
	memfd = p0[1] = p1[1] = -1;

	/* connect never waits for the listener's accept (ipc_connect(3)): a
	 * refusal (its mode) reaches the data path as a status byte */
	return &c->base;
fail:
	e = errno;
	ipc__close_fd(memfd);
	ipc__close_fd(p0[0]);
	ipc__close_fd(p0[1]);
	ipc__close_fd(p1[0]);
	ipc__close_fd(p1[1]);
	if (c)
		conn_free(c);
	errno = e;
	return NULL;
}

/* Is fd a unix stream socket (a wake channel we may send to safely)? */
static int is_unix_stream(int fd)
{
	struct stat st;
	int v;
	socklen_t sl = sizeof v;
	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
		return 0;
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &sl) < 0 || v != AF_UNIX)
		return 0;
	sl = sizeof v;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &sl) < 0 || v != SOCK_STREAM)
		return 0;
	return 1;
}

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

/* Is fd a memfd of exactly size bytes that we can map read-write and that
 * nobody can ever shrink, grow or reseal (so our mapping never faults with
 * SIGBUS and the peer cannot take write access away)? */
static int memfd_ok(int fd, uint64_t size)
{
	struct stat st;
	struct statfs sf;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != size)
		return 0;
	if (fstatfs(fd, &sf) < 0 || (sf.f_type != TMPFS_MAGIC && sf.f_type != HUGETLBFS_MAGIC))
		return 0;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_ACCMODE) != O_RDWR)
		return 0;
	int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, bad = F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;
	int seals = fcntl(fd, F_GET_SEALS);
	return seals >= 0 && (seals & need) == need && !(seals & bad);
}

/* Validate a client's hello and descriptors and build the connection
 * (ipc__rdv_ops.build).  Never trusts the peer: sizes are checked against
 * our own options, every descriptor's kind, flags and seals. */
static int shm_build(struct ipc__rdv_listener *rl, int *sock, const unsigned char *raw, int *fds,
		     const struct ipc_cred *cr, void **out, enum ipc__rdv_status *status)
{
	struct shm_listener *l = (struct shm_listener *)rl;
	struct shm_hello h;
	memcpy(&h, raw, sizeof h);
	*status = IPC__RDV_PROTO;
	if (h.magic != SHM_MAGIC || h.version != SHM_VERSION)
		return IPC__RDV_REFUSE;
	for (int i = 0; i < 2; i++) {
		if (h.rsize[i] < 4096 || h.rsize[i] > ((uint64_t)1 << 31) || (h.rsize[i] & (h.rsize[i] - 1)) ||
		    h.cap[i] < 4096 || h.cap[i] > h.rsize[i])
			return IPC__RDV_REFUSE;
	}
	if (h.region != region_size(h.rsize[0], h.rsize[1]))
		return IPC__RDV_REFUSE;
	if (h.rsize[0] > l->ring_max || h.rsize[1] > l->ring_max) {
		*status = IPC__RDV_LIMIT;
		return IPC__RDV_REFUSE;
	}
	if (!memfd_ok(fds[0], h.region) || !is_unix_stream(fds[1]) || !is_unix_stream(fds[2]))
		return IPC__RDV_REFUSE;
	/* our own sends never hold more than our capacity, whatever the ring */
	if (h.cap[1] > l->tx_cap_max)
		h.cap[1] = l->tx_cap_max;
	struct shm_conn *c = conn_alloc();
	if (!c)
		return IPC__RDV_RETRY;
	c->side = 1;
	c->map_len = (size_t)h.region;
	void *p = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	if (p == MAP_FAILED) {
		int e = errno;
		conn_free(c);
		errno = e;
		if (e == ENOMEM || e == ENFILE || e == EMFILE)
			return IPC__RDV_RETRY;
		*status = IPC__RDV_PROTO; /* the peer's object cannot be mapped */
		return IPC__RDV_REFUSE;
	}
	c->map = p;
	c->cred = *cr;
	c->wfd_rx = fds[1]; /* c->s ring: we consume */
	c->wfd_tx = fds[2]; /* s->c ring: we produce */
	fds[1] = fds[2] = -1;
	conn_setup(c, &h);
	c->sock = *sock;
	*out = c;
	return IPC__RDV_BUILT;
}

/* A built connection nobody accepted (listener close). */
static void shm_conn_drop(void *cc)
{
	struct shm_conn *c = cc;
	atomic_fetch_or(c->my_state, SHM_ST_FAILED);
	shutdown(c->sock, SHUT_RDWR);
	conn_free(c);
}

static const struct ipc__rdv_ops shm_rdv_ops = {
	.hello_len = sizeof(struct shm_hello),
	.nfds = SHM_NFDS,
	.build = shm_build,
	.reply = shm_reply,
	.conn_drop = shm_conn_drop,
};

static struct ipc_listener *shm_listen(const char *name, const struct ipc_options *o)
{
	struct sockaddr_un sa;
	socklen_t salen;
	if (shm_sockaddr(name, &sa, &salen) < 0)
		return NULL;
	struct shm_listener *l =
		(struct shm_listener *)ipc__rdv_listener_new(sizeof *l, &shm_rdv_ops, &sa, salen, o);
	if (!l)
		return NULL;
	l->tx_cap_max = o->capacity;
	size_t big = o->max_msg_size + 4 > o->capacity ? o->max_msg_size + 4 : o->capacity;
	l->ring_max = pow2_at_least(big);
	memcpy(l->name, name, strlen(name) + 1);
	return &l->rdv.base;
}

static int shm_listener_addr(const struct ipc_listener *ll, char *buf, size_t len)
{
	return ipc__format(buf, len, "shm:%s", ((const struct shm_listener *)ll)->name);
}

/* ---- test hook --------------------------------------------------------- */

/*
 * For tests only: addresses inside a connection's mapping.  what: 0 rx
 * head, 1 rx tail, 2 rx data, 3 tx head, 4 tx tail, 5 tx data, 6 our state
 * word, 7 the peer's.  *ringsize gets the ring storage size of that
 * direction.  NULL for anything else.
 */
void *ipc__shm_test_ptr(ipc_conn *cc, int what, size_t *ringsize);
void *ipc__shm_test_ptr(ipc_conn *cc, int what, size_t *ringsize)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	if (!cc || strcmp(cc->tp->scheme, "shm") != 0)
		return NULL;
	if (ringsize)
		*ringsize = (size_t)(what < 3 ? c->rx_mask + 1 : c->tx_mask + 1);
	switch (what) {
	case 0: return (void *)&c->rxc->head;
	case 1: return (void *)&c->rxc->tail;
	case 2: return c->rxd;
	case 3: return (void *)&c->txc->head;
	case 4: return (void *)&c->txc->tail;
	case 5: return c->txd;
	case 6: return (void *)c->my_state;
	case 7: return (void *)c->peer_state;
	default: return NULL;
	}
}

/*
 * For tests only: fn(c, arg) runs in every sleeping call right after it
 * armed its waiting flag (NULL: none).  Set before any thread sleeps.
 */
void ipc__shm_test_sleep_hook(void (*fn)(ipc_conn *c, void *arg), void *arg);
void ipc__shm_test_sleep_hook(void (*fn)(ipc_conn *c, void *arg), void *arg)
{
	sleep_hook_arg = arg;
	sleep_hook = fn;
}

/*
 * For tests only: what a publication does when it finds the other side's
 * waiting flag armed (take the flag, send the wake-up), now, whatever the
 * flag.  rx 0: as our send path wakes the peer's receiver; 1: as our
 * receive path wakes the peer's sender.
 */
void ipc__shm_test_wake(ipc_conn *cc, int rx);
void ipc__shm_test_wake(ipc_conn *cc, int rx)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	if (rx)
		wake_peer(c, &c->rxc->prod_waiting, c->wfd_rx);
	else
		wake_peer(c, &c->txc->cons_waiting, c->wfd_tx);
}

const struct ipc__transport ipc__shm_transport = {
	.scheme = "shm",
	.lazy_deadline = 1, /* the fast paths never read the clock */
	.listen = shm_listen,
	.accept = ipc__rdv_accept,
	.listener_addr = shm_listener_addr,
	.listener_fd = ipc__rdv_listener_fd,
	.listener_ready = ipc__rdv_listener_ready,
	.listener_close = ipc__rdv_listener_close,
	.connect = shm_connect,
	.send = shm_send,
	.recv = shm_recv,
	.send_batch = shm_send_batch,
	.recv_batch = shm_recv_batch,
	.flush = shm_flush,
	.conn_fd = shm_conn_fd,
	.conn_ready = shm_conn_ready,
	.peer_cred = shm_peer_cred,
	.close = shm_close,
};
