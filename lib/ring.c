/*
 * ring.c - the shm byte ring as a pure data structure (see ring.h).
 * No system call here: everything is loads, stores and copies, and every
 * index read from shared memory is validated before it is used.
 */
#include <string.h>

#include "ring.h"

void ipc__ring_init(struct ipc__ring *r, struct ipc__ring_ctl *ctl, unsigned char *data,
		    uint64_t cap, uint64_t size)
{
	r->ctl = ctl;
	r->data = data;
	r->cap = cap;
	r->mask = size - 1;
	r->head = r->tail = 0;
}

void ipc__ring_copy_out(const struct ipc__ring *r, uint64_t idx, void *dst, size_t n)
{
	size_t off = (size_t)(idx & r->mask), first = (size_t)(r->mask + 1) - off;
	if (n == 0)
		return;
	if (first >= n) {
		memcpy(dst, r->data + off, n);
	} else {
		memcpy(dst, r->data + off, first);
		memcpy((unsigned char *)dst + first, r->data, n - first);
	}
}

void ipc__ring_copy_in(struct ipc__ring *r, uint64_t idx, const void *src, size_t n)
{
	size_t off = (size_t)(idx & r->mask), first = (size_t)(r->mask + 1) - off;
	if (n == 0)
		return;
	if (first >= n) {
		memcpy(r->data + off, src, n);
	} else {
		memcpy(r->data + off, src, first);
		memcpy(r->data, (const unsigned char *)src + first, n - first);
	}
}

/* ---- producer ---------------------------------------------------------- */

enum ipc__ring_status ipc__ring_prod_sync(struct ipc__ring *r)
{
	uint64_t t = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
	if (t < r->tail || t > r->head)
		return IPC__RING_CORRUPT;
	r->tail = t;
	return IPC__RING_OK;
}

int ipc__ring_prod_moved(const struct ipc__ring *r)
{
	return atomic_load_explicit(&r->ctl->tail, memory_order_relaxed) != r->tail;
}

void ipc__ring_write(struct ipc__ring *r, const void *src, size_t n)
{
	ipc__ring_copy_in(r, r->head, src, n);
	r->head += n;
}

void ipc__ring_write_len(struct ipc__ring *r, uint32_t len)
{
	ipc__ring_write(r, &len, sizeof len);
}

/* Store an index, then read the other side's waiting word (Dekker).  The
 * asymmetric case: if the second read of peer_asym still sees it set, that
 * read (and our store before it, in program order) came before the
 * barrier the peer's membarrier() runs on our CPU when it stops
 * advertising, so the peer sees our index once that call returned. */
static uint32_t publish(_Atomic uint64_t *idx, uint64_t v, _Atomic uint32_t *flag,
			const _Atomic uint32_t *peer_asym)
{
	if (peer_asym) {
		atomic_store_explicit(idx, v, memory_order_release);
		atomic_signal_fence(memory_order_seq_cst);
		uint32_t w = atomic_load_explicit(flag, memory_order_relaxed);
		atomic_signal_fence(memory_order_seq_cst);
		if (atomic_load_explicit(peer_asym, memory_order_relaxed))
			return w;
		/* the symmetric pair below (storing the same index again) */
	}
	atomic_store_explicit(idx, v, memory_order_seq_cst);
	return atomic_load_explicit(flag, memory_order_seq_cst);
}

uint32_t ipc__ring_publish_head(struct ipc__ring *r, const _Atomic uint32_t *peer_asym)
{
	return publish(&r->ctl->head, r->head, &r->ctl->cons_waiting, peer_asym);
}

/* ---- consumer ---------------------------------------------------------- */

enum ipc__ring_status ipc__ring_cons_sync(struct ipc__ring *r)
{
	uint64_t h = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
	if (h < r->head || h - r->tail > r->cap)
		return IPC__RING_CORRUPT;
	r->head = h;
	return IPC__RING_OK;
}

int ipc__ring_cons_moved(const struct ipc__ring *r)
{
	return atomic_load_explicit(&r->ctl->head, memory_order_relaxed) != r->head;
}

enum ipc__ring_frame ipc__ring_next(const struct ipc__ring *r, size_t max, size_t *len, uint64_t *need)
{
	uint64_t avail = ipc__ring_avail(r);
	uint32_t l32;
	*len = 0;
	if (avail < IPC__RING_FRAME_HDR) {
		*need = IPC__RING_FRAME_HDR;
		return IPC__FRAME_NONE;
	}
	ipc__ring_copy_out(r, r->tail, &l32, sizeof l32);
	*len = l32;
	if (l32 > max)
		return IPC__FRAME_BAD;
	if ((uint64_t)l32 + IPC__RING_FRAME_HDR > r->cap)
		return IPC__FRAME_BIG;
	if (avail < (uint64_t)l32 + IPC__RING_FRAME_HDR) {
		*need = (uint64_t)l32 + IPC__RING_FRAME_HDR;
		return IPC__FRAME_NONE;
	}
	return IPC__FRAME_WHOLE;
}

void ipc__ring_read(struct ipc__ring *r, void *dst, size_t n)
{
	if (dst)
		ipc__ring_copy_out(r, r->tail, dst, n);
	r->tail += n;
}

uint32_t ipc__ring_publish_tail(struct ipc__ring *r, const _Atomic uint32_t *peer_asym)
{
	return publish(&r->ctl->tail, r->tail, &r->ctl->prod_waiting, peer_asym);
}
