/* net/net.h: what the files of net/ share (internal). */
#ifndef WEFT_NET_NET_H
#define WEFT_NET_NET_H

#include <stdint.h>
#include <sys/types.h>

struct msghdr;
struct weft_stream;

/* recvmsg/sendmsg with a deadline (net/socket.c). Suspend. */
ssize_t weft__recvmsg_until(int fd, struct msghdr *msg, int flags, int64_t deadline);
ssize_t weft__sendmsg_until(int fd, const struct msghdr *msg, int flags, int64_t deadline);

/* A stream over fd with the reader limit `limit` (0: the default); owns fd
 * from now on (closes it on -ENOMEM). net/stream.c. */
int weft__stream_new(int fd, size_t limit, struct weft_stream **out);

#endif
