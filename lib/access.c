/* access.c - who may connect to whom on the local transports (ipc(7),
 * "Resources and security").  One rule, used by unix, shm and mq. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc_impl.h"

int ipc__mode_allows(unsigned mode, const struct ipc_cred *cr)
{
	if (cr->uid == 0)
		return 1;
	if (cr->uid == geteuid())
		return (mode & 0200) != 0;
	if (cr->gid == getegid())
		return (mode & 0020) != 0;
	return (mode & 0002) != 0;
}

int ipc__listener_trusted(const struct ipc_options *o, const struct ipc_cred *cr)
{
	if (o->peer_check == IPC_PEER_ANY || cr->uid == 0)
		return 0;
	uid_t want = o->peer_check == IPC_PEER_UID ? o->peer_uid : geteuid();
	if (cr->uid == want)
		return 0;
	errno = EPERM;
	return -1;
}

int ipc__sock_cred(int fd, struct ipc_cred *cr)
{
	struct ucred uc;
	socklen_t len = sizeof uc;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return -1;
	cr->pid = uc.pid;
	cr->uid = uc.uid;
	cr->gid = uc.gid;
	return 0;
}
