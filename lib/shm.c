/*
 * shm.c - the shm:name transport: shared-memory rings between processes.
 *
 * Files: ring.c is the byte ring (a pure data structure in shared memory:
 * indices, frames, validation; see ring.h), wake.c the wake-ups (bytes on
 * socketpairs, fences, bounded sleeps); this file is the transport built on
 * them: rendezvous, handshake, send/recv, readiness, close.
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
 * kernel object dies with the last process holding it.  Per connection and
 * side: 3 descriptors (rendezvous socket + 2 wake sockets).  The
 * rendezvous socket stays open for the life of the connection: the peer's
 * death shows as POLLHUP on it (and on the wake sockets); an orderly close
 * also sets a CLOSED word in the shared header before the sockets are
 * closed.
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
 * made.  connect never waits for the listener's verdict: a refusal reaches
 * the client's data path as a status byte (EACCES on its next call).  The
 * memfd is sized only after RLIMIT_FSIZE is checked (EFBIG, never
 * SIGXFSZ).
 *
 * Data.  One ring per direction (ring.h), capacity = opt.capacity of the
 * client.  A send that fits is written whole and published; one larger
 * than the ring streams in pieces of at most SHM_CHUNK; the receiver
 * reassembles a streamed frame (straight into the caller's buffer, or
 * into one malloc'd buffer of exactly the announced length, checked
 * against max_msg_size BEFORE allocating) and delivers it only once
 * complete.  A ring invariant broken by the peer fails the connection
 * with EPROTO.  A half-written frame is never delivered, so a writer
 * killed mid-message yields ECONNRESET, never a torn message.
 *
 * Held data.  A send that may not wait (IPC__NOW) is accepted whole
 * whenever nothing is held: what does not fit now is copied into one
 * malloc'd buffer (at most one message, <= max_msg_size) and moved on by
 * later sends, receives, flushes, conn_ready and close.  While something is
 * held a non-waiting send fails with EAGAIN, and IPC_POLLOUT is reported
 * exactly when nothing is held.
 *
 * Wake-ups.  No system call on the fast path: a sender copies, publishes
 * head and only if the receiver's waiting word is set (Dekker pairing)
 * wakes it.  The store-load fence the pairing needs is made asymmetric
 * when both processes are registered for membarrier(2) (hdr->asym; see
 * wake.c), until the side's waits show that they mostly sleep (its first
 * conn_ready, or request/response traffic: see asym_off).  A waiter first
 * spins (at most SHM_SPIN polls of the index, and only while spinning has
 * recently paid off: see spin_budget), then arms its word, fences,
 * re-checks, and sleeps in poll() on its end of the ring's wake socketpair
 * and on the rendezvous socket; wake-up bytes are read only once poll()
 * reported them (one bounded read).  Never draining before arming matters
 * because a waker takes the word (exchange to 0) some time after reading
 * it: a late waker may take the word of the NEXT sleep, and its byte is
 * then what ends that sleep.  A stale byte only ends a sleep early.  A
 * peer flooding a wake socket only makes sleeps end early: every loop
 * re-reads the ring and the deadline, and a byte other than the wake-up
 * byte fails the connection with EPROTO.  Sleeping in poll() rather than
 * on a futex means the peer's death (POLLHUP) wakes a blocked call at
 * once.  Each wake socket end is read by one role only (the receive path
 * waits on the rx one, the send path on the tx one), so one thread sending
 * while another receives never steals a wake-up.  A send to a peer that
 * died while not blocked is detected when the send would wait, and
 * otherwise by a socket check every SHM_LIVE_EVERY sends.
 *
 * Readiness.  conn_fd is the rendezvous socket.  conn_ready computes
 * readiness from the rings (pulling the arrived part of a streamed message
 * into its buffer, so IPC_POLLIN means a receive would not block), moves
 * held data, and when nothing is ready sets a "poller" bit in the waiting
 * words: the peer then sends one wake-up byte on the socket, which
 * conn_ready consumes after a wait (not when ipc_poll saw the socket
 * quiet: IPC__READY_QUIET; so a loop over many connections makes no
 * system call for those that did not wake it).
 *
 * Close.  Held data is moved until the linger deadline while what the
 * peer sends is taken and discarded (two ends closing at once, both with
 * data held, both finish); then the state word says CLOSED (all delivered)
 * or FAILED (held data dropped: close returns -1).  Only the process that
 * uses a handle ends the connection by closing it (the owner); a close in
 * a process that merely inherited the handle across fork() releases its
 * copies.  This is what lets the ends of an ipc_pair go to a parent and
 * its child.
 *
 * Threads: one thread may send (send, send_batch, flush) while another
 * receives (recv, recv_batch) or calls conn_ready for any events.  At most
 * one thread at a time may call conn_ready (poller wake-up bytes on the
 * one descriptor are taken by whichever thread reads them).  The send
 * path's state belongs to the sending thread while nothing is held; held data is moved
 * by whoever holds tx_lock (the sending thread, or a receive/conn_ready
 * that finds held data and takes the lock without waiting).  What the two
 * paths share (socket status, peer gone, failure) is atomic.
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
#include <sys/un.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "ipc_impl.h"
#include "ring.h"

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");

#define SHM_MAGIC 0x4c495053u     /* "LIPS" */
#define SHM_VERSION 2u
#define SHM_PREFIX "libipc-shm/"
#define SHM_NAME_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1 - (sizeof SHM_PREFIX - 1))
#define SHM_LINE IPC__RING_LINE
#define SHM_HDR_SIZE 4096         /* header + both control blocks, one page */
#define SHM_NFDS 3                /* memfd, the server's two wake sockets */
#define SHM_WAKE IPC__WAKE_POLLER /* wake-up byte on the socket (readiness) */
#define SHM_SPIN 2000             /* polls of the index before sleeping, at most */
#define SHM_LIVE_EVERY 256u       /* sends between two socket checks (power of 2) */
#define SHM_CHUNK ((uint64_t)64 << 10) /* publication step while streaming */
#define SHM_FUTILE_MAX 8          /* fruitless wake-ups before shm_sleep throttles */
#define SHM_ANY_OWNER (-1)        /* owner of a handle that is not a pair end */
#define SHM_VERDICT_MS 200        /* bound on waiting for a refusal's status byte */
#define SHM_SOCK_READS 64         /* bytes one socket check takes at most */
#define SHM_HELD_SLICE 1          /* ms a receive sleeps between pushes of held data */
#define SHM_ASYM_WINDOW 16        /* membarrier() sleeps of a path between two looks... */
#define SHM_ASYM_RATIO 64         /* ...which need this many messages per sleep to go on */

/* Per-side state words. */
#define SHM_ST_CLOSED 1u /* closed in order: everything sent is in the ring */
#define SHM_ST_FAILED 2u /* gave up on the connection (protocol error, ...) */

/* Start of the region.  The layout is recomputed by each side from the
 * hello; these fields are informational except the state words. */
struct shm_hdr {
	uint32_t magic, version;
	uint64_t cap[2], rsize[2], region;
	_Alignas(SHM_LINE) _Atomic uint32_t state[2]; /* [0] client, [1] server */
	_Alignas(SHM_LINE) _Atomic uint32_t asym[2];   /* side registered for membarrier */
	_Alignas(SHM_LINE) struct ipc__ring_ctl ctl[2]; /* [0] c->s, [1] s->c */
	_Alignas(SHM_LINE) _Atomic uint64_t srv_cap;   /* the server's s->c capacity, if it
	                                                  is below the ring's (0: none) */
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

/* Where a receive or send stands when it cannot finish now. */
enum shm_step {
	STEP_DONE = 0,  /* finished */
	STEP_ERR = -1,  /* failed, errno set */
	STEP_WAIT = 1,  /* needs the peer: sleep (or EAGAIN/ETIMEDOUT) */
};

struct shm_conn {
	struct ipc_conn base;
	int side; /* 0 client, 1 server */
	int sock; /* rendezvous socket: death, status, readiness wake-ups */
	int wfd_rx, wfd_tx; /* our ends of the wake socketpairs of each ring */
	unsigned char *map;
	size_t map_len;
	struct shm_hdr *hdr;
	struct ipc__ring_ctl *txc, *rxc;
	unsigned char *txd, *rxd;
	uint64_t tx_cap, tx_mask, rx_cap, rx_mask;
	int rx_cap_known;         /* rx_learn_cap ran */
	int ncpu;                 /* CPUs online when made (spin_budget) */
	int rx_futile, tx_futile; /* wake-ups in a row that brought nothing */
	_Atomic uint32_t *my_state, *peer_state;
	_Atomic uint32_t *peer_asym;
	int asym_me;  /* our process is registered for membarrier() */
	_Atomic int asym_fence; /* our waits fence with membarrier() (the
	                           authority: the peer may write hdr->asym) */
	struct ipc_cred cred;

	/* shared by the two paths */
	_Atomic int owner;     /* pair end: pid of the process using it, 0: not
	                          yet; SHM_ANY_OWNER: not a pair end */
	_Atomic int peer_gone; /* EOF/HUP seen on the socket or a wake socket */
	_Atomic int sock_eof;  /* EOF seen on the socket itself */
	_Atomic int sock_err;  /* status byte / protocol error seen on the socket */
	_Atomic int fail_err;  /* our side gave up (conn_fail): the first error */

	/* send path: the sending thread's while held_any is 0, else tx_lock's */
	_Atomic int tx_lock;
	_Atomic int held_any;        /* held != NULL, readable by every thread */
	struct ipc__ring tx;
	unsigned tx_count;
	int tx_err;
	int tx_spin;                 /* spin budget of the send path */
	int tx_asym_sleeps;          /* membarrier() sleeps since tx_asym_mark */
	unsigned tx_asym_mark;       /* tx_count when that window began */
	unsigned char *held;         /* rest of a frame (with its header) */
	size_t held_len, held_off;

	/* conn_ready (one thread at a time) */
	_Atomic int ready_waited;    /* last call said "wait on the socket" */
	_Atomic unsigned ready_calls;

	/* receive path */
	struct ipc__ring rx;
	int rx_err;
	int rx_spin;                 /* spin budget of the receive path */
	unsigned rx_count;           /* messages received */
	int rx_asym_sleeps;          /* membarrier() sleeps since rx_asym_mark */
	unsigned rx_asym_mark;       /* rx_count when that window began */
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

static int deadline_passed(int64_t deadline)
{
	return deadline == IPC__NOW || (deadline != IPC__FOREVER && ipc__now() >= deadline);
}

static int asym_register(void)
{
	return ipc__wake_fence_register();
}

/*
 * The asymmetric protocol (wake.c) is advertised per side in
 * hdr->asym[side]: while our side uses it (asym_fence) we fence with
 * membarrier() after arming a waiting word, and the peer publishes with
 * only a compiler barrier.  That pays while our waits rarely end in a
 * sleep (a stream of messages).  Where they often do, one membarrier()
 * (an interrupt on every CPU) per sleep costs far more than a fence per
 * publication, and our side goes to the symmetric protocol for good
 * (asym_off): at the first conn_ready (a connection driven by an event
 * loop arms a word on nearly every wait), and when a path sleeps
 * SHM_ASYM_WINDOW times with fewer than SHM_ASYM_RATIO messages per sleep
 * (request/response: about one sleep per message; see asym_count).  Our
 * own mode lives in our memory: a peer that writes our advertisement
 * changes only how it publishes itself.
 */

/* After arming a waiting word, before re-checking the index.  0 when no
 * membarrier() was needed, 1 when one was made, -1 when it could not be
 * (the caller then sleeps briefly).  Symmetric: the word was armed with a
 * seq_cst read-modify-write, and the seq_cst load of asym_fence here keeps
 * the re-check after it also where that RMW alone would not (an LL/SC
 * loop on arm64 without LSE: its store-release, then this load-acquire,
 * are ordered).  No atomic_thread_fence: ThreadSanitizer rejects it. */
static int sleep_fence(struct shm_conn *c)
{
	if (!atomic_load(&c->asym_fence))
		return 0;
	return ipc__wake_fence() < 0 ? -1 : 1;
}

/* Leave the asymmetric protocol (any thread; the first call does it).
 * Our waits keep fencing until the membarrier() after the advertisement
 * is withdrawn has returned: from then on, every publication of the peer
 * either saw the withdrawal and fenced, or is visible to us (ring.c,
 * publish). */
static void asym_off(struct shm_conn *c)
{
	if (!atomic_load_explicit(&c->asym_fence, memory_order_relaxed))
		return;
	atomic_store(&c->hdr->asym[c->side], 0);
	if (ipc__wake_fence() == 0)
		atomic_store(&c->asym_fence, 0);
}

/* A path slept after a membarrier(): count it against the messages it
 * moved since the window began (count: its message counter). */
static void asym_count(struct shm_conn *c, int *sleeps, unsigned *mark, unsigned count)
{
	if (++*sleeps < SHM_ASYM_WINDOW)
		return;
	if (count - *mark < (unsigned)SHM_ASYM_WINDOW * SHM_ASYM_RATIO)
		asym_off(c);
	*sleeps = 0;
	*mark = count;
}

/* Where the peer advertises the asymmetric protocol, or NULL when its
 * membarrier() cannot reach us (our process is not registered). */
static inline const _Atomic uint32_t *peer_asym(struct shm_conn *c)
{
	return c->asym_me ? c->peer_asym : NULL;
}

/* Publish our head / tail and wake the peer's waiter if it has one. */
static inline void tx_publish(struct shm_conn *c)
{
	if (__builtin_expect(ipc__ring_publish_head(&c->tx, peer_asym(c)) != 0, 0))
		ipc__wake_take(&c->txc->cons_waiting, c->wfd_tx, c->sock);
}

static inline void rx_publish(struct shm_conn *c)
{
	if (__builtin_expect(ipc__ring_publish_tail(&c->rx, peer_asym(c)) != 0, 0))
		ipc__wake_take(&c->rxc->prod_waiting, c->wfd_rx, c->sock);
}

/* Wake every sleeper of the peer (we close or fail). */
static void wake_all(struct shm_conn *c)
{
	atomic_fetch_or(&c->txc->cons_waiting, IPC__WAIT_SLEEP);
	ipc__wake_take(&c->txc->cons_waiting, c->wfd_tx, c->sock);
	atomic_fetch_or(&c->rxc->prod_waiting, IPC__WAIT_SLEEP);
	ipc__wake_take(&c->rxc->prod_waiting, c->wfd_rx, c->sock);
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

/* Both ring views, from what conn_setup computed. */
static void conn_rings(struct shm_conn *c)
{
	ipc__ring_init(&c->tx, c->txc, c->txd, c->tx_cap, c->tx_mask + 1);
	ipc__ring_init(&c->rx, c->rxc, c->rxd, c->rx_cap, c->rx_mask + 1);
	c->tx_spin = c->rx_spin = SHM_SPIN;
	atomic_store_explicit(&c->owner, SHM_ANY_OWNER, memory_order_relaxed);
}

/*
 * Which process uses a pair's end (shm_pair).  Only that process's close
 * ends the connection (state word, shutdown, wake-ups); a close in a
 * process that merely inherited the end across fork() releases its copies
 * and leaves the connection to the process that uses it.  The first call
 * that uses an end claims it, and a wait re-claims one that moved to
 * another process.  Accepted and connected handles belong to whichever
 * process uses them (SHM_ANY_OWNER): ipc(7) lets only one of them use or
 * close the handle, so a worker that got it by fork closes it for real.
 */
static inline void conn_claim_new(struct shm_conn *c)
{
	if (__builtin_expect(!atomic_load_explicit(&c->owner, memory_order_relaxed), 0))
		atomic_store_explicit(&c->owner, (int)getpid(), memory_order_relaxed);
}

static void conn_claim(struct shm_conn *c)
{
	int o = atomic_load_explicit(&c->owner, memory_order_relaxed);
	if (o == SHM_ANY_OWNER)
		return; /* no system call for the handles that are not pair ends */
	int me = (int)getpid();
	if (o != me)
		atomic_store_explicit(&c->owner, me, memory_order_relaxed);
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

/* A byte the listener sent after the handshake, as an error: wake-ups are
 * none; the rest is the rendezvous status table (0 a late "accepted",
 * EACCES a refusal...), anything else a protocol error, never an errno of
 * its own. */
static int status_error(unsigned char b)
{
	return b == SHM_WAKE ? 0 : ipc__rdv_status_errno(b);
}

/* Take what is waiting on the socket (wake-up bytes, status bytes, EOF)
 * without blocking; at most SHM_SOCK_READS bytes whatever the peer sends.
 * do_poll: look first (cheap when idle). */
static void sock_check(struct shm_conn *c, int do_poll)
{
	if (do_poll) {
		struct pollfd p = {.fd = c->sock, .events = POLLIN};
		if (poll(&p, 1, 0) <= 0 || !p.revents)
			return;
	}
	for (int i = 0; i < SHM_SOCK_READS; i++) {
		unsigned char b;
		int r = status_read(c->sock, &b);
		if (r == 1) {
			/* a client sends nothing after its hello but wake-ups */
			int e = c->side == 1 ? (b == SHM_WAKE ? 0 : EPROTO) : status_error(b);
			if (e)
				atomic_store(&c->sock_err, e);
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
			atomic_store(&c->sock_eof, 1);
			atomic_store(&c->peer_gone, 1);
		}
		break;
	}
}

/* The liveness check of the send and receive paths: a look at the socket
 * that reads it only once the peer has shut it down (then its status
 * byte, if any, and EOF).  Poller wake-up bytes stay for conn_ready, which
 * may run in another thread. */
static void sock_alive(struct shm_conn *c)
{
	struct pollfd p = {.fd = c->sock, .events = POLLRDHUP};
	if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
		sock_check(c, 0);
}

/* The peer is done: the status byte it may have left on the socket
 * before going (a refusal, a protocol error) says why, even when a wake
 * socket's hangup told us first. */
static int peer_verdict(struct shm_conn *c)
{
	if (atomic_load(&c->sock_err))
		return atomic_load(&c->sock_err);
	sock_check(c, 1);
	if (!atomic_load(&c->sock_err) && !atomic_load(&c->sock_eof) && !atomic_load(c->peer_state)) {
		/* a listener that refuses us closes our wake sockets before
		 * it sends its status byte and closes the socket: give the
		 * socket a moment to say which (bounded; a dead process's
		 * descriptors all close at once) */
		struct pollfd p = {.fd = c->sock, .events = POLLIN};
		if (poll(&p, 1, SHM_VERDICT_MS) > 0)
			sock_check(c, 0);
	}
	return atomic_load(&c->sock_err);
}

/* Nonzero when the peer will not produce or consume anything more. */
static int peer_done(struct shm_conn *c)
{
	return atomic_load(c->peer_state) != 0 || atomic_load(&c->peer_gone) ||
	       atomic_load(&c->sock_err) != 0;
}

/* Our side gives up on the connection (from either path): tell the peer.
 * Each path picks the error up from fail_err. */
static void conn_fail(struct shm_conn *c, int e)
{
	int zero = 0;
	atomic_compare_exchange_strong(&c->fail_err, &zero, e);
	atomic_fetch_or(c->my_state, SHM_ST_FAILED);
	wake_all(c);
}

/* A ring invariant broken by the peer. */
static int ring_corrupt(struct shm_conn *c)
{
	conn_fail(c, EPROTO);
	return fail_errno(EPROTO);
}

/* What a wait saw on a wake socket, applied to the connection. */
static void wake_seen(struct shm_conn *c, enum ipc__wake_seen w)
{
	if (w == IPC__WAKE_HUP)
		atomic_store(&c->peer_gone, 1);
	else if (w == IPC__WAKE_JUNK)
		conn_fail(c, EPROTO);
	else if (w == IPC__WAKE_OTHER)
		sock_check(c, 0);
}

/*
 * Spinning pays only while the peer runs on another core.  Each path
 * keeps a budget: a spin that saw the peer move doubles it (up to
 * SHM_SPIN), one that ended in a sleep halves it; with one core online,
 * or when the budget has run down, the waiter sleeps at once (and tries a
 * short spin again now and then).
 */
static int spin_budget(const struct shm_conn *c, int *budget)
{
	if (c->ncpu < 2)
		return 0;
	if (*budget < 16)
		*budget = 16; /* probe again: the load may have changed */
	return *budget;
}

static void spin_result(int *budget, int paid)
{
	if (paid)
		*budget = *budget * 2 > SHM_SPIN ? SHM_SPIN : *budget * 2;
	else
		*budget /= 2;
}

/*
 * Sleep until the peer publishes (a byte on our end of the ring's wake
 * socketpair, sent only while our waiting word is armed), the peer goes
 * away (POLLHUP on that socketpair or on the socket: immediate), or
 * deadline.  ready(c) is re-checked after arming.  The caller re-checks
 * everything afterwards (a wake-up may be stale).
 */
static void shm_sleep(struct shm_conn *c, int rx, int (*ready)(struct shm_conn *), int64_t deadline,
		      int ms_cap)
{
	int *budget = rx ? &c->rx_spin : &c->tx_spin;
	int spins = spin_budget(c, budget);
	for (int i = 0; i < spins; i++) {
		if (ready(c)) {
			spin_result(budget, 1);
			return;
		}
		cpu_relax();
	}
	if (spins)
		spin_result(budget, 0);
	_Atomic uint32_t *flag = rx ? &c->rxc->cons_waiting : &c->txc->prod_waiting;
	int wfd = rx ? c->wfd_rx : c->wfd_tx;
	/* Wake-up bytes are read only after poll() saw them, never before
	 * arming: a waker that read our word during an earlier sleep may
	 * exchange it to 0 only now, after we armed it again; its byte must
	 * then still be there to end this poll (a stale byte ends it early:
	 * we look at the ring and come back). */
	atomic_fetch_or(flag, IPC__WAIT_SLEEP);
	int fence = sleep_fence(c);
	enum ipc__wake_seen w = IPC__WAKE_QUIET;
	if (!ready(c) && !peer_done(c))
		w = ipc__wake_wait(wfd, c->sock, POLLRDHUP, deadline, fence >= 0 ? ms_cap : 1);
	atomic_fetch_and(flag, ~IPC__WAIT_SLEEP);
	if (fence > 0) {
		if (rx)
			asym_count(c, &c->rx_asym_sleeps, &c->rx_asym_mark, c->rx_count);
		else
			asym_count(c, &c->tx_asym_sleeps, &c->tx_asym_mark, c->tx_count);
	}
	int *futile = rx ? &c->rx_futile : &c->tx_futile;
	if (ready(c)) {
		*futile = 0;
	} else if (w == IPC__WAKE_WOKEN && ++*futile > SHM_FUTILE_MAX) {
		/* wake-ups that bring nothing, again and again: a peer floods
		 * the socket.  Deadlines hold anyway; this keeps the wait from
		 * turning into a spin (at most one round per millisecond). */
		int ms = ipc__remaining_ms(deadline);
		poll(NULL, 0, ms < 0 || ms > 1 ? 1 : ms);
	}
	wake_seen(c, w);
}

/* ---- send path: the lock that lets other threads move held data -------- */

static void tx_enter(struct shm_conn *c)
{
	while (atomic_exchange_explicit(&c->tx_lock, 1, memory_order_acquire))
		cpu_relax(); /* others hold it only for a push that never waits */
}

static int tx_try_enter(struct shm_conn *c)
{
	return !atomic_exchange_explicit(&c->tx_lock, 1, memory_order_acquire);
}

static void tx_leave(struct shm_conn *c)
{
	atomic_store_explicit(&c->tx_lock, 0, memory_order_release);
}

static int tx_push_held(struct shm_conn *c, int64_t deadline);

/* From the receive path or conn_ready: move held data if the send path is
 * not busy.  Never waits. */
static void tx_help(struct shm_conn *c)
{
	if (!atomic_load_explicit(&c->held_any, memory_order_relaxed) || !tx_try_enter(c))
		return;
	int e = errno;
	if (c->held)
		tx_push_held(c, IPC__NOW);
	errno = e;
	tx_leave(c);
}

/* ---- receive path ------------------------------------------------------ */

/* Our sticky error, or the connection's failure. */
static int rx_failed(struct shm_conn *c)
{
	if (!c->rx_err)
		c->rx_err = atomic_load_explicit(&c->fail_err, memory_order_relaxed);
	return c->rx_err;
}

/* Load and validate the peer's head.  0 or -1 EPROTO (connection failed). */
/* A server whose capacity is below the ring we made bounds its own sends
 * by it (what a client may make it hold) and says so in the header before
 * it publishes anything; the consumer must classify frames by the cap the
 * producer keeps (ring.h), so the client learns it with the first data. */
static void rx_learn_cap(struct shm_conn *c)
{
	if (c->rx_cap_known || c->rx.head == 0)
		return;
	c->rx_cap_known = 1;
	uint64_t pc = atomic_load(&c->hdr->srv_cap);
	if (c->side == 0 && pc >= 4096 && pc < c->rx.cap)
		c->rx.cap = pc;
}

static int rx_refresh(struct shm_conn *c)
{
	if (ipc__ring_cons_sync(&c->rx) != IPC__RING_OK)
		return ring_corrupt(c);
	rx_learn_cap(c);
	return 0;
}

static int rx_moved(struct shm_conn *c)
{
	return ipc__ring_cons_moved(&c->rx);
}

/*
 * Not enough data (need bytes in all): STEP_WAIT while the peer may still
 * publish; else the end of the stream (STEP_ERR with EPIPE / ECONNRESET /
 * a status error, sticky) - unless its last publication brought what we
 * need (STEP_DONE: look again).
 */
static enum shm_step rx_short(struct shm_conn *c, uint64_t need)
{
	if (!peer_done(c))
		return STEP_WAIT;
	uint64_t before = c->rx.head;
	if (rx_refresh(c) < 0)
		return STEP_ERR;
	if (c->rx.head != before && ipc__ring_avail(&c->rx) >= need)
		return STEP_DONE;
	int se = peer_verdict(c);
	uint32_t st = atomic_load(c->peer_state);
	if (se)
		c->rx_err = se;
	else if ((st & SHM_ST_CLOSED) && !(st & SHM_ST_FAILED) && ipc__ring_avail(&c->rx) == 0 &&
		 !c->part_active)
		c->rx_err = EPIPE;
	else
		c->rx_err = ECONNRESET;
	errno = c->rx_err;
	return STEP_ERR;
}

/* Copy what has arrived of a streamed frame into dst. */
static enum shm_step rx_stream_fill(struct shm_conn *c, unsigned char *dst)
{
	while (c->part_got < c->part_len) {
		uint64_t avail = ipc__ring_avail(&c->rx);
		if (avail == 0) {
			if (rx_refresh(c) < 0)
				return STEP_ERR;
			avail = ipc__ring_avail(&c->rx);
		}
		if (avail == 0) {
			enum shm_step s = rx_short(c, 1);
			if (s == STEP_DONE)
				continue;
			return s;
		}
		size_t take = c->part_len - c->part_got;
		if ((uint64_t)take > avail)
			take = (size_t)avail;
		ipc__ring_read(&c->rx, dst + c->part_got, take);
		c->part_got += take;
		rx_publish(c); /* let the writer go on */
	}
	return STEP_DONE;
}

/* Our own buffer for a streamed frame (bounded by max_msg_size already). */
static int rx_part_alloc(struct shm_conn *c)
{
	if (c->part_buf)
		return 0;
	c->part_buf = malloc(c->part_len ? c->part_len : 1);
	return c->part_buf ? 0 : fail_errno(ENOMEM);
}

static void rx_part_start(struct shm_conn *c, size_t len)
{
	ipc__ring_read(&c->rx, NULL, IPC__RING_FRAME_HDR);
	c->part_active = 1;
	c->part_len = len;
	c->part_got = 0;
	c->part_buf = NULL;
}

/* Continue a streamed frame, into the caller's buffer when it can take it
 * whole, else into our own; deliver it once complete (*n: its length). */
static enum shm_step rx_stream(struct shm_conn *c, unsigned char *ubuf, size_t len, void **allocp, size_t *n)
{
	if (!allocp && len < c->part_len)
		return fail_errno(EMSGSIZE);
	if (allocp && rx_part_alloc(c) < 0)
		return STEP_ERR;
	enum shm_step s = rx_stream_fill(c, c->part_buf ? c->part_buf : ubuf);
	if (s != STEP_DONE)
		return s;
	*n = c->part_len;
	if (allocp) {
		*allocp = c->part_buf;
	} else if (c->part_buf) {
		memcpy(ubuf, c->part_buf, *n);
		free(c->part_buf);
	}
	c->part_buf = NULL;
	c->part_active = 0;
	c->part_len = c->part_got = 0;
	return STEP_DONE;
}

/* One attempt at a message (*n its length).  may_stream: start a frame
 * larger than the ring (else STEP_WAIT). */
static enum shm_step rx_try(struct shm_conn *c, void *buf, size_t len, void **allocp, int may_stream, size_t *n)
{
	for (;;) {
		if (rx_failed(c))
			return fail_errno(c->rx_err);
		if (c->part_active)
			return rx_stream(c, buf, len, allocp, n);
		size_t l;
		uint64_t need;
		enum ipc__ring_frame f = ipc__ring_next(&c->rx, c->base.opt.max_msg_size, &l, &need);
		if (f == IPC__FRAME_NONE) {
			if (rx_refresh(c) < 0)
				return STEP_ERR;
			f = ipc__ring_next(&c->rx, c->base.opt.max_msg_size, &l, &need);
		}
		switch (f) {
		case IPC__FRAME_NONE: {
			enum shm_step s = rx_short(c, need);
			if (s == STEP_DONE)
				continue;
			return s;
		}
		case IPC__FRAME_BAD:
			return ring_corrupt(c);
		case IPC__FRAME_BIG:
			if (!may_stream)
				return STEP_WAIT;
			if (!allocp && len < l)
				return fail_errno(EMSGSIZE);
			rx_part_start(c, l);
			continue;
		case IPC__FRAME_WHOLE:
			break;
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
		ipc__ring_read(&c->rx, NULL, IPC__RING_FRAME_HDR);
		ipc__ring_read(&c->rx, dst, l);
		*n = l;
		return STEP_DONE;
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

/* Sleep of the receive path.  With data held on the send path the sleep
 * is cut in slices of SHM_HELD_SLICE ms, each ending with a push of held
 * data (a request held, then a blocking receive of its reply): waiting
 * for the room itself would mean reading a wake socket or the descriptor
 * that the sending or polling thread reads, and stealing its wake-ups. */
static void rx_sleep(struct shm_conn *c, int64_t deadline)
{
	int held = atomic_load_explicit(&c->held_any, memory_order_relaxed);
	shm_sleep(c, 1, rx_moved, deadline, held ? SHM_HELD_SLICE : 0);
}

static ssize_t shm_recv(struct ipc_conn *cc, void *buf, size_t len, void **allocp, int64_t deadline)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	conn_claim_new(c);
	for (;;) {
		size_t n = 0;
		enum shm_step s = rx_try(c, buf, len, allocp, 1, &n);
		if (s == STEP_DONE) {
			c->rx_count++;
			if (!c->part_active)
				rx_publish(c);
			return (ssize_t)n;
		}
		if (s == STEP_ERR) {
			int e = errno;
			if (e != EMSGSIZE && e != ENOMEM && !c->rx_err)
				rx_park(c, buf);
			errno = e;
			return -1;
		}
		tx_help(c);
		deadline = ipc__anchor(deadline); /* from the first wait on */
		if (deadline == IPC__NOW) {
			sock_alive(c);
			if (peer_done(c))
				continue;
		}
		if (deadline_passed(deadline)) {
			if (rx_park(c, buf) < 0)
				return -1;
			return ipc__wouldblock(deadline);
		}
		conn_claim(c);
		rx_sleep(c, deadline);
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
		size_t got;
		if (c->part_active || rx_try(c, msgs[i].iov_base, msgs[i].iov_len, NULL, 0, &got) != STEP_DONE)
			break; /* an error shows again on the next call */
		msgs[i].iov_len = got;
	}
	c->rx_count += (unsigned)(i - 1); /* the first counted in shm_recv */
	if (i > 1)
		rx_publish(c);
	return (ssize_t)i;
}

/* ---- send path --------------------------------------------------------- */

/* Load and validate the peer's tail.  0 or -1 EPROTO. */
static int tx_refresh(struct shm_conn *c)
{
	if (ipc__ring_prod_sync(&c->tx) != IPC__RING_OK)
		return ring_corrupt(c);
	return 0;
}

static int tx_moved(struct shm_conn *c)
{
	return ipc__ring_prod_moved(&c->tx);
}

/* Our sticky error, or the connection's failure. */
static int tx_failed(struct shm_conn *c)
{
	if (!c->tx_err)
		c->tx_err = atomic_load_explicit(&c->fail_err, memory_order_relaxed);
	return c->tx_err;
}

/* The send path cannot go on: sticky error. */
static int tx_dead(struct shm_conn *c)
{
	int se = peer_verdict(c);
	c->tx_err = se == EACCES || se == EPROTO ? se : EPIPE;
	return fail_errno(c->tx_err);
}

/* Wait until need bytes are free.  0, or -1 (EAGAIN/ETIMEDOUT/EPIPE/...). */
static int tx_room(struct shm_conn *c, uint64_t need, int64_t deadline)
{
	for (;;) {
		if (tx_failed(c))
			return fail_errno(c->tx_err);
		if (peer_done(c))
			return tx_dead(c);
		if (ipc__ring_room(&c->tx) >= need)
			return 0;
		if (tx_refresh(c) < 0)
			return -1;
		if (ipc__ring_room(&c->tx) >= need)
			return 0;
		if (deadline == IPC__NOW)
			sock_alive(c);
		else if (!deadline_passed(deadline))
			shm_sleep(c, 0, tx_moved, deadline, 0);
		if (peer_done(c))
			return tx_dead(c);
		if (deadline_passed(deadline)) {
			if (tx_refresh(c) < 0)
				return -1;
			if (ipc__ring_room(&c->tx) >= need)
				return 0;
			return ipc__wouldblock(deadline);
		}
	}
}

static void held_drop(struct shm_conn *c)
{
	free(c->held);
	c->held = NULL;
	c->held_len = c->held_off = 0;
	atomic_store_explicit(&c->held_any, 0, memory_order_release);
}

/* Push as much of the held rest as the deadline allows.  0 when all out;
 * -1 with EAGAIN/ETIMEDOUT (some left) or the connection's error.  Called
 * with tx_lock held, or by the sender while nothing is held. */
static int tx_push_held(struct shm_conn *c, int64_t deadline)
{
	while (c->held) {
		if (tx_room(c, 1, deadline) < 0)
			return -1;
		uint64_t n = ipc__ring_room(&c->tx);
		if (n > SHM_CHUNK)
			n = SHM_CHUNK;
		if (n > c->held_len - c->held_off)
			n = c->held_len - c->held_off;
		ipc__ring_write(&c->tx, c->held + c->held_off, (size_t)n);
		c->held_off += (size_t)n;
		tx_publish(c);
		if (c->held_off == c->held_len)
			held_drop(c); /* last: the sender's fast path may go on */
	}
	return 0;
}

/* Cursor over an iovec. */
struct iov_cur {
	const struct iovec *iov;
	int cnt, i;
	size_t off;
};

/* Copy the next n bytes of the iovec to dst (NULL: into our ring). */
static void cur_take(struct shm_conn *c, struct iov_cur *cu, unsigned char *dst, size_t n)
{
	while (n > 0) {
		while (cu->iov[cu->i].iov_len == cu->off) {
			cu->i++;
			cu->off = 0;
		}
		size_t k = cu->iov[cu->i].iov_len - cu->off;
		if (k > n)
			k = n;
		const unsigned char *src = (const unsigned char *)cu->iov[cu->i].iov_base + cu->off;
		if (dst) {
			memcpy(dst, src, k);
			dst += k;
		} else {
			ipc__ring_write(&c->tx, src, k);
		}
		cu->off += k;
		n -= k;
	}
}

/* Keep the rest of a message (hdr: also its frame header first) to send
 * later.  0, or -1 ENOMEM. */
static int hold_rest(struct shm_conn *c, struct iov_cur *cu, size_t left, int hdr)
{
	size_t h = hdr ? IPC__RING_FRAME_HDR : 0;
	unsigned char *b = malloc(h + left ? h + left : 1);
	if (!b)
		return fail_errno(ENOMEM);
	if (hdr) {
		uint32_t l32 = (uint32_t)left;
		memcpy(b, &l32, sizeof l32);
	}
	cur_take(c, cu, b + h, left);
	c->held = b;
	c->held_len = h + left;
	c->held_off = 0;
	atomic_store_explicit(&c->held_any, 1, memory_order_relaxed);
	return 0;
}

/* Stream a frame larger than the ring, waiting until deadline; what is
 * left when the deadline passes after the first piece is held. */
static int tx_stream(struct shm_conn *c, const struct iovec *iov, int iovcnt, size_t total, int64_t deadline)
{
	/* nothing is sent unless the header and a first piece fit */
	if (tx_room(c, IPC__RING_FRAME_HDR + 1, deadline) < 0)
		return -1;
	ipc__ring_write_len(&c->tx, (uint32_t)total);
	struct iov_cur cu = {iov, iovcnt, 0, 0};
	size_t left = total;
	while (left > 0) {
		uint64_t n = ipc__ring_room(&c->tx);
		if (n == 0) {
			if (tx_room(c, 1, deadline) < 0) {
				if (errno != EAGAIN && errno != ETIMEDOUT)
					return -1;
				/* started flowing: hold the rest, accepted */
				if (hold_rest(c, &cu, left, 0) < 0) {
					conn_fail(c, ENOMEM);
					return fail_errno(ENOMEM);
				}
				return 0;
			}
			n = ipc__ring_room(&c->tx);
		}
		if (n > SHM_CHUNK)
			n = SHM_CHUNK;
		if (n > left)
			n = left;
		cur_take(c, &cu, NULL, (size_t)n);
		left -= (size_t)n;
		tx_publish(c);
	}
	return 0;
}

/* A send that may not wait: the frame whole if it fits now, else as much
 * as fits and the rest held (accepted either way). */
static int tx_nowait(struct shm_conn *c, const struct iovec *iov, int iovcnt, size_t total)
{
	uint64_t need = IPC__RING_FRAME_HDR + (uint64_t)total;
	if (tx_room(c, 0, IPC__NOW) < 0)
		return -1;
	if (ipc__ring_room(&c->tx) < need && tx_refresh(c) < 0)
		return -1;
	struct iov_cur cu = {iov, iovcnt, 0, 0};
	if (ipc__ring_room(&c->tx) >= need) {
		ipc__ring_write_len(&c->tx, (uint32_t)total);
		cur_take(c, &cu, NULL, total);
		tx_publish(c);
		return 0;
	}
	if (hold_rest(c, &cu, total, 1) < 0)
		return -1; /* nothing sent */
	if (tx_push_held(c, IPC__NOW) < 0 && errno != EAGAIN)
		return -1;
	return 0;
}

/* Checks common to every slow send: sticky errors, peer gone, held data
 * (moved on until deadline: a new message waits behind it). */
static int tx_begin(struct shm_conn *c, int64_t deadline)
{
	if (tx_failed(c))
		return fail_errno(c->tx_err);
	if ((c->tx_count++ & (SHM_LIVE_EVERY - 1)) == 0)
		sock_alive(c);
	if (peer_done(c))
		return tx_dead(c);
	if (c->held && tx_push_held(c, deadline) < 0)
		return -1;
	return 0;
}

/* Write one frame of a single buffer that fits (room checked by caller). */
static inline void tx_frame1(struct shm_conn *c, const void *buf, size_t len)
{
	size_t off = (size_t)(c->tx.head & c->tx.mask);
	uint32_t l32 = (uint32_t)len;
	if (__builtin_expect(off + IPC__RING_FRAME_HDR + len <= (size_t)c->tx.mask + 1, 1)) {
		memcpy(c->tx.data + off, &l32, sizeof l32);
		memcpy(c->tx.data + off + IPC__RING_FRAME_HDR, buf, len);
		c->tx.head += IPC__RING_FRAME_HDR + (uint64_t)len;
	} else {
		ipc__ring_write_len(&c->tx, l32);
		ipc__ring_write(&c->tx, buf, len);
	}
}

/* The common case without a system call or a wait: no error, nothing
 * held, no liveness check due, peer alive, room for the whole frame
 * (syncing the peer's tail once if needed).  1 sent (unpublished), 0 take
 * the slow path (nothing done). */
static inline int tx_fast(struct shm_conn *c, const void *buf, size_t len)
{
	uint64_t need = IPC__RING_FRAME_HDR + (uint64_t)len;
	if (atomic_load_explicit(&c->held_any, memory_order_acquire) || c->tx_err ||
	    (c->tx_count & (SHM_LIVE_EVERY - 1)) == 0 || need > c->tx.cap)
		return 0;
	if (atomic_load_explicit(c->peer_state, memory_order_relaxed) ||
	    atomic_load_explicit(&c->peer_gone, memory_order_relaxed) ||
	    atomic_load_explicit(&c->sock_err, memory_order_relaxed) ||
	    atomic_load_explicit(&c->fail_err, memory_order_relaxed))
		return 0;
	if (ipc__ring_room(&c->tx) < need &&
	    (ipc__ring_prod_sync(&c->tx) != IPC__RING_OK || ipc__ring_room(&c->tx) < need))
		return 0; /* the slow path reports a corrupt tail */
	c->tx_count++;
	tx_frame1(c, buf, len);
	return 1;
}

static int tx_send_slow(struct shm_conn *c, const struct iovec *iov, int iovcnt, size_t total, int64_t deadline)
{
	if (tx_begin(c, deadline) < 0)
		return -1;
	if (deadline == IPC__NOW)
		return tx_nowait(c, iov, iovcnt, total);
	if (total + IPC__RING_FRAME_HDR > c->tx.cap)
		return tx_stream(c, iov, iovcnt, total, deadline);
	if (tx_room(c, total + IPC__RING_FRAME_HDR, deadline) < 0)
		return -1;
	struct iov_cur cu = {iov, iovcnt, 0, 0};
	ipc__ring_write_len(&c->tx, (uint32_t)total);
	cur_take(c, &cu, NULL, total);
	tx_publish(c);
	return 0;
}

static int shm_send(struct ipc_conn *cc, const struct iovec *iov, int iovcnt, size_t total, int64_t deadline)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	conn_claim_new(c);
	if (iovcnt == 1 && tx_fast(c, iov[0].iov_base, total)) {
		tx_publish(c);
		return 0;
	}
	deadline = ipc__anchor(deadline); /* the slow path may wait */
	conn_claim(c);
	tx_enter(c);
	int r = tx_send_slow(c, iov, iovcnt, total, deadline);
	tx_leave(c);
	return r;
}

static ssize_t shm_send_batch(struct ipc_conn *cc, const struct iovec *msgs, size_t n, int64_t deadline)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	if (shm_send(cc, &msgs[0], 1, msgs[0].iov_len, deadline) < 0)
		return -1;
	size_t i = 1;
	uint64_t pub = c->tx.head;
	for (; i < n; i++) {
		size_t l = msgs[i].iov_len;
		if (ipc__ring_room(&c->tx) < l + IPC__RING_FRAME_HDR && c->tx.head != pub) {
			tx_publish(c); /* let the reader drain while we look */
			pub = c->tx.head;
		}
		if (!tx_fast(c, msgs[i].iov_base, l))
			break;
	}
	if (c->tx.head != pub)
		tx_publish(c);
	return (ssize_t)i;
}

static int shm_flush(struct ipc_conn *cc, int64_t deadline)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	if (!atomic_load_explicit(&c->held_any, memory_order_acquire))
		return 0;
	conn_claim(c);
	deadline = ipc__anchor(deadline);
	tx_enter(c);
	int r = tx_failed(c) ? fail_errno(c->tx_err) : tx_push_held(c, deadline);
	tx_leave(c);
	return r;
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
	if (rx_failed(c))
		return 1;
	if (!c->part_active) {
		size_t l;
		uint64_t need;
		if (rx_refresh(c) < 0)
			return 1;
		switch (ipc__ring_next(&c->rx, c->base.opt.max_msg_size, &l, &need)) {
		case IPC__FRAME_NONE:
			return 0;
		case IPC__FRAME_WHOLE:
		case IPC__FRAME_BAD: /* the receive reports it */
			return 1;
		case IPC__FRAME_BIG:
			rx_part_start(c, l);
			break;
		}
	}
	if (c->part_got == c->part_len && c->part_buf)
		return 1;
	if (rx_part_alloc(c) < 0) {
		conn_fail(c, ENOMEM);
		return 1;
	}
	return rx_stream_fill(c, c->part_buf) != STEP_WAIT;
}

/* Would a send of any size be accepted (or fail at once)?  Exactly when
 * nothing is held; moves held data on first when the send path is free. */
static int tx_ready(struct shm_conn *c)
{
	if (!atomic_load_explicit(&c->held_any, memory_order_acquire))
		return 1;
	if (!tx_try_enter(c))
		return 0; /* the sending thread is at it */
	int e = errno, r = 1;
	if (c->held && !tx_failed(c) && tx_push_held(c, IPC__NOW) < 0)
		r = errno != EAGAIN; /* an error: the send reports it */
	errno = e;
	tx_leave(c);
	return r;
}

/* conn_ready's IPC__READY_PEEK: what is ready now, from memory only;
 * nothing armed (the socket is read by the next full conn_ready). */
static int ready_peek(struct shm_conn *c, int events)
{
	int res = 0;
	if (atomic_load_explicit(&c->held_any, memory_order_acquire) && !(events & IPC_POLLOUT))
		tx_ready(c); /* held data moves whatever the caller waits for */
	int done = peer_done(c);
	if ((events & IPC_POLLIN) && (rx_ready(c) || done))
		res |= IPC_POLLIN;
	if ((events & IPC_POLLOUT) && (tx_ready(c) || done))
		res |= IPC_POLLOUT;
	if (!res)
		return 0;
	if (done)
		res |= IPC_POLLHUP;
	if (atomic_load(&c->fail_err) || atomic_load(&c->sock_err))
		res |= IPC_POLLERR;
	return res;
}

static int shm_conn_ready(struct ipc_conn *cc, int events, short *pollev)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	int res = 0;
	if (events & IPC__READY_PEEK)
		return ready_peek(c, events);
	conn_claim(c);
	asym_off(c);
	/* the socket has news only for a caller that waited on it and did
	 * not see it quiet (and a slow check now and then); else spare the
	 * system call */
	if ((c->ready_waited && !(events & IPC__READY_QUIET)) || (c->ready_calls++ & 63) == 0)
		sock_check(c, !(events & IPC__READY_SEEN)); /* takes our wake-up bytes too */
	c->ready_waited = 0;
	/* held data moves on whatever the caller waits for (ipc_send(3)): a
	 * loop that only asks for IPC_POLLIN must still deliver its reply */
	int held = !(events & IPC_POLLOUT) && atomic_load_explicit(&c->held_any, memory_order_acquire) &&
		   !tx_ready(c);
	int done = peer_done(c);
	if ((events & IPC_POLLIN) && (rx_ready(c) || done))
		res |= IPC_POLLIN;
	if ((events & IPC_POLLOUT) && (tx_ready(c) || done))
		res |= IPC_POLLOUT;
	if (done)
		res |= IPC_POLLHUP;
	if (atomic_load(&c->fail_err) || atomic_load(&c->sock_err))
		res |= IPC_POLLERR;
	if (res)
		return res;
	/* ask the peer for a wake-up byte, then look once more; a word still
	 * armed since an earlier call was fenced then (the peer has not
	 * published since, or it would have taken it) */
	int fresh = 0;
	if (events & IPC_POLLIN)
		fresh |= !(atomic_fetch_or(&c->rxc->cons_waiting, IPC__WAIT_POLL) & IPC__WAIT_POLL);
	if ((events & IPC_POLLOUT) || held)
		fresh |= !(atomic_fetch_or(&c->txc->prod_waiting, IPC__WAIT_POLL) & IPC__WAIT_POLL);
	if (fresh && sleep_fence(c) < 0) {
		/* no fence: a wake-up byte may be missed; report ready so
		 * the caller asks again instead of sleeping on the socket */
		return events & (IPC_POLLIN | IPC_POLLOUT);
	}
	if ((events & IPC_POLLIN) && rx_ready(c))
		res |= IPC_POLLIN;
	if ((events & IPC_POLLOUT) && tx_ready(c))
		res |= IPC_POLLOUT;
	if (held)
		tx_ready(c); /* room may have come before the word was armed */
	if (peer_done(c))
		res |= IPC_POLLHUP | (events & (IPC_POLLIN | IPC_POLLOUT));
	*pollev = POLLIN;
	c->ready_waited = !res;
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

/* While lingering: take and discard what the peer sends, so a peer that
 * also lingers (its data held, waiting for room) finishes too. */
static void rx_discard(struct shm_conn *c)
{
	if (c->rx_err || ipc__ring_cons_sync(&c->rx) != IPC__RING_OK)
		return;
	if (ipc__ring_avail(&c->rx)) {
		ipc__ring_read(&c->rx, NULL, (size_t)ipc__ring_avail(&c->rx));
		rx_publish(c);
	}
}

/* Sleep of a lingering close: room on our ring or data on the peer's. */
static void linger_sleep(struct shm_conn *c, int64_t deadline)
{
	ipc__wake_drain(c->wfd_rx);
	ipc__wake_drain(c->wfd_tx);
	atomic_fetch_or(&c->txc->prod_waiting, IPC__WAIT_SLEEP);
	atomic_fetch_or(&c->rxc->cons_waiting, IPC__WAIT_SLEEP);
	int fenced = sleep_fence(c) >= 0;
	if (!tx_moved(c) && !rx_moved(c) && !peer_done(c)) {
		struct pollfd p[3] = {{.fd = c->wfd_tx, .events = POLLIN},
				      {.fd = c->wfd_rx, .events = POLLIN},
				      {.fd = c->sock, .events = POLLRDHUP}};
		int ms = ipc__remaining_ms(deadline);
		if (!fenced && (ms < 0 || ms > 1))
			ms = 1;
		if (poll(p, 3, ms) > 0) {
			for (int i = 0; i < 2; i++)
				if (p[i].revents & (POLLHUP | POLLERR))
					atomic_store(&c->peer_gone, 1);
			if (p[2].revents)
				sock_check(c, 0);
		}
	}
	atomic_fetch_and(&c->txc->prod_waiting, ~IPC__WAIT_SLEEP);
	atomic_fetch_and(&c->rxc->cons_waiting, ~IPC__WAIT_SLEEP);
}

/* Move held data until the deadline.  0 when all out, else -1 errno. */
static int linger(struct shm_conn *c, int64_t deadline)
{
	for (;;) {
		if (tx_push_held(c, IPC__NOW) == 0)
			return 0;
		if (errno != EAGAIN)
			return -1;
		rx_discard(c);
		if (deadline_passed(deadline))
			return fail_errno(deadline == IPC__NOW ? EAGAIN : ETIMEDOUT);
		linger_sleep(c, deadline);
	}
}

static int shm_close(struct ipc_conn *cc, int64_t linger_deadline)
{
	struct shm_conn *c = (struct shm_conn *)cc;
	int ret = 0, e = 0;
	int owner = atomic_load(&c->owner);
	if (owner != SHM_ANY_OWNER && owner != (int)getpid()) {
		conn_free(c); /* an inherited pair end, not used here: the user goes on */
		return 0;
	}
	if (c->held && (tx_failed(c) ? fail_errno(c->tx_err) : linger(c, linger_deadline)) < 0) {
		e = errno; /* held data dropped */
		ret = -1;
	}
	if (!c->held && !rx_failed(c) && !tx_failed(c))
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
	long n = sysconf(_SC_NPROCESSORS_ONLN); /* per connection: no global state */
	c->ncpu = n > 0 ? (int)n : 1;
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
	atomic_store(&c->asym_fence, c->asym_me);
	atomic_store(&c->hdr->asym[c->side], (uint32_t)c->asym_me);
	conn_rings(c);
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
	if (h.cap[1] < h.rsize[1]) /* before anything of ours is published */
		atomic_store(&((struct shm_hdr *)p)->srv_cap, h.cap[1]);
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

/* ---- ipc_pair --------------------------------------------------------- */

/* One end of a pair: side, its mapping of memfd, its three sockets. */
static struct shm_conn *pair_end(int side, int memfd, const struct shm_hello *h, int sock, int wrx, int wtx)
{
	struct shm_conn *c = conn_alloc();
	if (!c)
		return NULL;
	c->side = side;
	c->sock = sock;
	c->wfd_rx = wrx;
	c->wfd_tx = wtx;
	c->map_len = (size_t)h->region;
	void *p = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (p == MAP_FAILED || ipc__sock_cred(sock, &c->cred) < 0) {
		int e = errno;
		if (p != MAP_FAILED)
			munmap(p, c->map_len);
		free(c);
		errno = e;
		return NULL;
	}
	c->map = p;
	if (conn_setup(c, h) < 0) {
		int e = errno;
		munmap(p, c->map_len);
		free(c);
		errno = e;
		return NULL;
	}
	/* the ends may go to other processes (fork): no membarrier protocol,
	 * whose registration a child does not inherit */
	c->asym_me = 0;
	atomic_store(&c->asym_fence, 0);
	atomic_store(&c->hdr->asym[side], 0);
	atomic_store(&c->owner, 0);
	return c;
}

/* A connected pair in this process: a memfd and three socket pairs (the
 * rendezvous socket's role, and one wake socketpair per ring).  Its ends
 * survive fork(): each process keeps the end it uses. */
static int shm_pair(const struct ipc_options *o, struct ipc_conn *out[2])
{
	struct shm_hello h = {.magic = SHM_MAGIC, .version = SHM_VERSION};
	h.cap[0] = h.cap[1] = o->capacity;
	h.rsize[0] = h.rsize[1] = pow2_at_least(o->capacity);
	h.region = region_size(h.rsize[0], h.rsize[1]);
	int sp[2] = {-1, -1}, p0[2] = {-1, -1}, p1[2] = {-1, -1}, memfd = -1, e;
	struct shm_conn *c[2] = {NULL, NULL};
	struct rlimit rl;
	if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < h.region)
		return fail_errno(EFBIG); /* ftruncate would raise SIGXFSZ */
	memfd = memfd_create("libipc-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (memfd < 0 || fchmod(memfd, 0600) < 0 || ftruncate(memfd, (off_t)h.region) < 0 ||
	    fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sp) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, p0) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, p1) < 0)
		goto fail;
	/* p0: the c->s ring's wake-ups (side 0 produces), p1: s->c's */
	if (!(c[0] = pair_end(0, memfd, &h, sp[0], p1[0], p0[0])))
		goto fail;
	sp[0] = p1[0] = p0[0] = -1;
	if (!(c[1] = pair_end(1, memfd, &h, sp[1], p0[1], p1[1])))
		goto fail;
	ipc__close_fd(memfd);
	out[0] = &c[0]->base;
	out[1] = &c[1]->base;
	return 0;
fail:
	e = errno;
	if (c[0])
		conn_free(c[0]);
	int fds[] = {memfd, sp[0], sp[1], p0[0], p0[1], p1[0], p1[1]};
	for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
		if (fds[i] >= 0)
			ipc__close_fd(fds[i]);
	return fail_errno(e);
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
	.ready_peek = 1,
	.pair = shm_pair,
	.peer_cred = shm_peer_cred,
	.close = shm_close,
};
