/*
 * wake.c - wake-ups of the shm transport (see ring.h): bytes on unix
 * stream socketpairs, the membarrier(2) fence of the asymmetric protocol,
 * a bounded sleep.  No loop here depends on what a peer writes: a drain
 * reads one buffer, a wait one poll(2).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ipc_impl.h"
#include "ring.h"

#define WAKE_BUF 256 /* bytes one drain reads at most */

void ipc__wake_send(int fd, unsigned char b)
{
	ssize_t r = send(fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)r;
}

void ipc__wake_take(_Atomic uint32_t *flag, int sleep_fd, int poll_fd)
{
	uint32_t w = atomic_exchange(flag, 0);
	if (w & IPC__WAIT_SLEEP)
		ipc__wake_send(sleep_fd, IPC__WAKE_BYTE);
	if (w & IPC__WAIT_POLL)
		ipc__wake_send(poll_fd, IPC__WAKE_POLLER);
}

enum ipc__wake_seen ipc__wake_drain(int fd)
{
	unsigned char b[WAKE_BUF];
	ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
	if (r == 0)
		return IPC__WAKE_HUP;
	if (r < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? IPC__WAKE_QUIET : IPC__WAKE_HUP;
	for (ssize_t i = 0; i < r; i++)
		if (b[i] != IPC__WAKE_BYTE)
			return IPC__WAKE_JUNK;
	return IPC__WAKE_WOKEN;
}

enum ipc__wake_seen ipc__wake_wait(int fd, int other, short other_events, int64_t deadline, int ms_cap)
{
	struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = other, .events = other_events}};
	int ms = ipc__remaining_ms(deadline);
	if (ms_cap > 0 && (ms < 0 || ms > ms_cap))
		ms = ms_cap;
	if (poll(p, 2, ms) <= 0)
		return IPC__WAKE_QUIET; /* EINTR too: the caller looks again */
	if (p[0].revents & POLLIN)
		return ipc__wake_drain(fd);
	if (p[0].revents)
		return IPC__WAKE_HUP;
	return p[1].revents ? IPC__WAKE_OTHER : IPC__WAKE_QUIET;
}

/*
 * Asymmetric fences.  Publishing an index and then reading the other
 * side's waiting word needs a store-load fence (Dekker); with it on every
 * message the producer stalls on each publication.  When both processes
 * are registered for MEMBARRIER_CMD_GLOBAL_EXPEDITED, the publishing side
 * uses only a compiler barrier and the side about to sleep (rare: after
 * spinning) pays for a membarrier() after arming its word, which runs a
 * full fence on every CPU running a registered process.  Where sleeps are
 * not rare the side goes back to the symmetric protocol (shm.c,
 * asym_off).
 */
#ifndef MEMBARRIER_CMD_GLOBAL_EXPEDITED
#define MEMBARRIER_CMD_GLOBAL_EXPEDITED (1 << 1)
#define MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED (1 << 2)
#endif

int ipc__wake_fence_register(void)
{
#ifdef SYS_membarrier
	return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
#else
	return 0;
#endif
}

int ipc__wake_fence(void)
{
#ifdef SYS_membarrier
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0)
		return 0;
#endif
	return -1;
}
