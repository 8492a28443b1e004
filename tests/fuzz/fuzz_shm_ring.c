/* fuzz_shm_ring.c - libFuzzer target: the shm ring (lib/ring.c) driven
 * directly, with a hostile peer writing the shared words and bytes.  Each
 * input is a script: every step is one opcode byte and an 8-byte value.
 * The peer may store any head or tail and scribble on the storage; our
 * side acts as consumer (sync, look at the next frame, read it whole or
 * stream it) and as producer (sync, write what the room allows).  The ring
 * must never report more room than its capacity, more data than was
 * validated, a frame longer than max, and never touch memory outside its
 * storage (ASan guards both ends of it). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ring.h"

/* the consumer's advertisement of the asymmetric protocol (ring.h) */
static _Atomic uint32_t fz_asym = 1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { SIZE = 4096, MAX = 3 * SIZE };

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint64_t cap = 16 + (uint64_t)data[0] * 16; /* 16 .. 4096 */
	data++;
	size--;
	struct ipc__ring_ctl *ctl = calloc(1, sizeof *ctl);
	unsigned char *store = malloc(SIZE), *msg = malloc(MAX);
	if (!ctl || !store || !msg)
		abort();
	memset(store, 0, SIZE);
	struct ipc__ring prod, cons;
	ipc__ring_init(&prod, ctl, store, cap, SIZE);
	ipc__ring_init(&cons, ctl, store, cap, SIZE);
	size_t part = 0, part_len = 0; /* a streamed frame in progress */
	while (size >= 9) {
		uint8_t op = data[0];
		uint64_t v = get64(data + 1);
		data += 9;
		size -= 9;
		switch (op % 6) {
		case 0: /* the peer stores any head */
			atomic_store(&ctl->head, (op & 0x80) ? v : cons.tail + v % (2 * cap + 1));
			break;
		case 1: /* the peer stores any tail */
			atomic_store(&ctl->tail, (op & 0x80) ? v : prod.tail + v % (2 * cap + 1));
			break;
		case 2: /* the peer scribbles on the storage */
			store[v % SIZE] = (unsigned char)(v >> 32);
			break;
		case 3: { /* consume */
			if (ipc__ring_cons_sync(&cons) != IPC__RING_OK)
				goto out;
			if (ipc__ring_avail(&cons) > cap)
				abort();
			if (part_len) {
				size_t take = part_len - part;
				if (take > ipc__ring_avail(&cons))
					take = (size_t)ipc__ring_avail(&cons);
				ipc__ring_read(&cons, msg + part, take);
				part += take;
				if (part == part_len)
					part = part_len = 0;
				ipc__ring_publish_tail(&cons, op & 1 ? &fz_asym : NULL);
				break;
			}
			size_t len;
			uint64_t need;
			switch (ipc__ring_next(&cons, MAX, &len, &need)) {
			case IPC__FRAME_NONE:
				if (need <= ipc__ring_avail(&cons) || need > cap)
					abort();
				break;
			case IPC__FRAME_BAD:
				if (len <= MAX)
					abort();
				goto out;
			case IPC__FRAME_BIG:
				if (len > MAX || len + IPC__RING_FRAME_HDR <= cap)
					abort();
				ipc__ring_read(&cons, NULL, IPC__RING_FRAME_HDR);
				part_len = len;
				part = 0;
				break;
			case IPC__FRAME_WHOLE:
				if (len > MAX || len + IPC__RING_FRAME_HDR > ipc__ring_avail(&cons))
					abort();
				ipc__ring_read(&cons, NULL, IPC__RING_FRAME_HDR);
				ipc__ring_read(&cons, msg, len);
				ipc__ring_publish_tail(&cons, op & 1 ? &fz_asym : NULL);
				break;
			}
			break;
		}
		case 4: { /* produce one frame, or as much as fits */
			if (ipc__ring_prod_sync(&prod) != IPC__RING_OK)
				goto out;
			uint64_t room = ipc__ring_room(&prod);
			if (room > cap)
				abort();
			size_t len = (size_t)(v % MAX);
			if (room < IPC__RING_FRAME_HDR)
				break;
			ipc__ring_write_len(&prod, (uint32_t)len);
			room -= IPC__RING_FRAME_HDR;
			ipc__ring_write(&prod, msg, len < room ? len : (size_t)room);
			ipc__ring_publish_head(&prod, op & 1 ? &fz_asym : NULL);
			break;
		}
		case 5: /* moved? (never validated: any answer is fine) */
			(void)ipc__ring_prod_moved(&prod);
			(void)ipc__ring_cons_moved(&cons);
			break;
		}
	}
out:
	free(ctl);
	free(store);
	free(msg);
	return 0;
}
