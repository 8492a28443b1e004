/* stub-0.1.c - stands in for libipc.so.0 as 0.1 built it (no symbol
 * versions) so that a program linked against it carries unversioned
 * references, exactly like a program built against the real 0.1.  It is
 * never run: test_abi.c runs the program against the new library. */
#include "ipc.h"

void ipc_options_init(struct ipc_options *o) { (void)o; }
ipc_listener *ipc_listen(const char *a, const struct ipc_options *o) { (void)a, (void)o; return 0; }
ipc_conn *ipc_accept(ipc_listener *l, int f) { (void)l, (void)f; return 0; }
ipc_conn *ipc_connect(const char *a, const struct ipc_options *o) { (void)a, (void)o; return 0; }
ssize_t ipc_send(ipc_conn *c, const void *b, size_t n, int f) { (void)c, (void)b, (void)n, (void)f; return 0; }
ssize_t ipc_recv(ipc_conn *c, void *b, size_t n, int f) { (void)c, (void)b, (void)n, (void)f; return 0; }
int ipc_conn_ready(ipc_conn *c, int e, short *p) { (void)c, (void)e, (void)p; return 0; }
int ipc_listener_ready(ipc_listener *l, int e, short *p) { (void)l, (void)e, (void)p; return 0; }
int ipc_listener_addr(const ipc_listener *l, char *b, size_t n) { (void)l, (void)b, (void)n; return 0; }
int ipc_poll(struct ipc_pollitem *i, size_t n, int t) { (void)i, (void)n, (void)t; return 0; }
int ipc_close(ipc_conn *c) { (void)c; return 0; }
int ipc_listener_close(ipc_listener *l) { (void)l; return 0; }
