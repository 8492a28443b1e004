/*
 * ring.h - the shm transport's byte ring (ring.c) and wake-ups (wake.c).
 *
 * RING.  One single-producer single-consumer byte ring per direction in
 * memory shared with a peer that is not trusted.  The ring is a pure data
 * structure: no system call, no connection, no error state of its own.
 * Indices are free-running 64-bit counters; storage is a power of two
 * (mask + 1) of which at most `cap` bytes are ever in flight.  Each side
 * keeps its own index in private memory (struct ipc__ring) and never
 * reads it back from shared memory; every index read from shared memory
 * is validated before use:
 *   producer: the consumer's tail may only move forward and never pass
 *             our head;
 *   consumer: the producer's head may only move forward and never exceed
 *             our tail + cap.
 * A violation is IPC__RING_CORRUPT; the caller fails the connection.  No
 * ring function ever reads or writes outside data[0..mask] whatever the
 * shared words say.
 *
 * Frames.  A frame is a native-endian u32 length and the payload,
 * unaligned, wrapping at the end of the storage.  A frame with
 * 4 + len <= cap is delivered once complete; a bigger one streams: the
 * consumer takes its header, then its payload piece by piece as the
 * producer publishes it.  The producer may publish any frame in pieces.
 *
 * Waiting flags.  Each control block has one waiting word per side
 * (IPC__WAIT_SLEEP: a thread sleeps on its wake socket; IPC__WAIT_POLL: a
 * poller waits on the connection's descriptor).  Publishing an index and
 * then reading the other side's word is a Dekker pairing: see
 * ipc__ring_publish_*.  What to do with a nonzero word is wake.c's job.
 *
 * WAKE (wake.c).  The system-call half: wake-up bytes on unix stream
 * socketpairs, the membarrier(2) fence of the asymmetric protocol, and a
 * sleep bounded by a deadline.  Draining is bounded (one buffer per call),
 * so a peer that floods a wake socket never holds a caller past its
 * deadline: callers rely on the ring state, never on counting bytes.
 */
#ifndef IPC_RING_H_INCLUDED
#define IPC_RING_H_INCLUDED

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define IPC__RING_LINE 128
#define IPC__RING_FRAME_HDR 4u /* native-endian u32 payload length */

/* waiting words */
#define IPC__WAIT_SLEEP 1u /* a thread sleeps on its wake socket */
#define IPC__WAIT_POLL 2u  /* a poller waits on the connection descriptor */

/* One direction's control block in shared memory: every word on its own
 * line. */
struct ipc__ring_ctl {
	_Alignas(IPC__RING_LINE) _Atomic uint64_t head;         /* written by the producer */
	_Alignas(IPC__RING_LINE) _Atomic uint64_t tail;         /* written by the consumer */
	_Alignas(IPC__RING_LINE) _Atomic uint32_t cons_waiting; /* IPC__WAIT_* of the consumer */
	_Alignas(IPC__RING_LINE) _Atomic uint32_t prod_waiting; /* IPC__WAIT_* of the producer */
};

/* One side's private view of a ring. */
struct ipc__ring {
	struct ipc__ring_ctl *ctl;
	unsigned char *data;
	uint64_t cap;  /* bytes that may be in flight */
	uint64_t mask; /* storage size - 1 */
	uint64_t head; /* producer: ours; consumer: last validated */
	uint64_t tail; /* consumer: ours; producer: last validated */
};

enum ipc__ring_status {
	IPC__RING_OK = 0,
	IPC__RING_CORRUPT = -1, /* the peer broke an invariant */
};

/* What ipc__ring_next() found at the consumer's tail. */
enum ipc__ring_frame {
	IPC__FRAME_NONE,  /* not enough yet: *need = bytes needed */
	IPC__FRAME_WHOLE, /* a complete frame of *len payload bytes */
	IPC__FRAME_BIG,   /* header of a frame larger than the ring: stream it */
	IPC__FRAME_BAD,   /* announced length over max: protocol error */
};

/* View storage of size bytes (a power of two >= cap) at data with control
 * block ctl.  Every ring starts at index 0 (whatever ctl says: the peer
 * may already have moved it). */
void ipc__ring_init(struct ipc__ring *r, struct ipc__ring_ctl *ctl, unsigned char *data,
		    uint64_t cap, uint64_t size);

/* Copy n bytes out of / into the storage at free-running index idx. */
void ipc__ring_copy_out(const struct ipc__ring *r, uint64_t idx, void *dst, size_t n);
void ipc__ring_copy_in(struct ipc__ring *r, uint64_t idx, const void *src, size_t n);

/* ---- producer ---- */

/* Bytes we may write now (by the last validated tail). */
static inline uint64_t ipc__ring_room(const struct ipc__ring *r)
{
	return r->cap - (r->head - r->tail);
}

/* Load and validate the consumer's tail. */
enum ipc__ring_status ipc__ring_prod_sync(struct ipc__ring *r);

/* Has the consumer's tail moved since the last sync?  (Unvalidated:
 * for spinning only.) */
int ipc__ring_prod_moved(const struct ipc__ring *r);

/* Append n bytes (n <= room), unpublished. */
void ipc__ring_write(struct ipc__ring *r, const void *src, size_t n);

/* Append a frame header (4 <= room), unpublished. */
void ipc__ring_write_len(struct ipc__ring *r, uint32_t len);

/* Publish our head and return the consumer's waiting word (nonzero: wake
 * it).  peer_asym: NULL, or the word where the consumer advertises the
 * asymmetric protocol (it fences with membarrier() before sleeping; see
 * wake.c).  While that word reads nonzero a compiler barrier is enough
 * here; it is read again AFTER the waiting word, and a 0 then costs a
 * fence and a second read: a consumer that stopped advertising since
 * (its store, then its membarrier()) either sees our index or is seen
 * waiting.  NULL: a seq_cst store-load pair. */
uint32_t ipc__ring_publish_head(struct ipc__ring *r, const _Atomic uint32_t *peer_asym);

/* ---- consumer ---- */

/* Bytes published and not yet consumed (by the last validated head). */
static inline uint64_t ipc__ring_avail(const struct ipc__ring *r)
{
	return r->head - r->tail;
}

/* Load and validate the producer's head. */
enum ipc__ring_status ipc__ring_cons_sync(struct ipc__ring *r);

/* Has the producer's head moved since the last sync?  (Unvalidated.) */
int ipc__ring_cons_moved(const struct ipc__ring *r);

/* Look at the frame at our tail with what is available (no sync):
 * see enum ipc__ring_frame.  *len: announced payload length (WHOLE, BIG,
 * BAD); *need: bytes needed in all (NONE). */
enum ipc__ring_frame ipc__ring_next(const struct ipc__ring *r, size_t max, size_t *len, uint64_t *need);

/* Consume n available bytes into dst (NULL: discard). */
void ipc__ring_read(struct ipc__ring *r, void *dst, size_t n);

/* Publish our tail and return the producer's waiting word (peer_asym as
 * for ipc__ring_publish_head). */
uint32_t ipc__ring_publish_tail(struct ipc__ring *r, const _Atomic uint32_t *peer_asym);

/* ---- wake.c ---------------------------------------------------------- */

#define IPC__WAKE_BYTE 1u     /* on a ring's wake socketpair */
#define IPC__WAKE_POLLER 0xfe /* on the connection descriptor (readiness) */

/* What a drain or a wait saw on a wake socket. */
enum ipc__wake_seen {
	IPC__WAKE_QUIET = 0, /* nothing (or the deadline) */
	IPC__WAKE_WOKEN = 1, /* wake-up bytes (or the other descriptor): look again */
	IPC__WAKE_HUP = 2,   /* the peer's end is closed: it is gone */
	IPC__WAKE_JUNK = 3,  /* a byte that is not a wake-up: protocol error */
	IPC__WAKE_OTHER = 4, /* the other descriptor reported something */
};

/* Send one wake-up byte; never blocks (a full socket already holds a
 * wake-up), never raises SIGPIPE. */
void ipc__wake_send(int fd, unsigned char b);

/* Take the waiting word at flag (exchange to 0) and send what it asks:
 * IPC__WAKE_BYTE on sleep_fd, IPC__WAKE_POLLER on poll_fd. */
void ipc__wake_take(_Atomic uint32_t *flag, int sleep_fd, int poll_fd);

/* Read at most one buffer of wake-up bytes without blocking.  Bounded:
 * whatever a peer writes, one call reads a fixed amount. */
enum ipc__wake_seen ipc__wake_drain(int fd);

/* Sleep until fd is readable (then one buffer is drained), other (-1:
 * none) reports other_events (or a hangup or an error), or deadline.
 * ms_cap > 0 bounds the sleep (a caller that could not fence).  Returns
 * what was seen on fd, else IPC__WAKE_OTHER or IPC__WAKE_QUIET. */
enum ipc__wake_seen ipc__wake_wait(int fd, int other, short other_events, int64_t deadline, int ms_cap);

/* Register this process for MEMBARRIER_CMD_GLOBAL_EXPEDITED.  1 if it can
 * use the asymmetric protocol, else 0. */
int ipc__wake_fence_register(void);

/* The fence a registered side issues after arming its waiting word and
 * before re-checking the index.  0, or -1 when it could not be made. */
int ipc__wake_fence(void);

#endif /* IPC_RING_H_INCLUDED */
