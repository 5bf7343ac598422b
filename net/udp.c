/* net/udp.c: datagram endpoints: a bound UDP socket, and sendto/recvfrom
 * built on sendmsg/recvmsg (net/socket.c), so that both backends and
 * cancellation behave as every other socket call. A datagram is never
 * split: recvfrom with a short buffer gets the datagram truncated (the
 * kernel's MSG_TRUNC rule), and the sender's address with it.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <weft/net.h>

#include "io/fd.h"
#include "io/op.h"
#include "net/net.h"

int weft_udp_bind(const weft_addr *a) {
  if (!a || !a->len || a->len > sizeof a->u) return -EINVAL;
  int f = a->u.sa.sa_family;
  if (f != AF_INET && f != AF_INET6) return -EINVAL;
  int fd = weft_socket(f, SOCK_DGRAM, 0);
  if (fd < 0) return fd;
  if (bind(fd, &a->u.sa, a->len) < 0) {
    int e = -errno;
    close(fd);
    return e;
  }
  return fd;
}

ssize_t weft_recvfrom(int fd, void *buf, size_t len, int flags, weft_addr *from) {
  int rc = weft__io_buf(buf, &len);
  if (rc) return rc;
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (from) {
    memset(from, 0, sizeof *from);
    msg.msg_name = &from->u;
    msg.msg_namelen = sizeof from->u;
  }
  ssize_t n = weft__recvmsg_until(fd, &msg, flags, WEFT__NO_DEADLINE);
  if (from) from->len = n < 0 ? 0 : msg.msg_namelen;
  return n;
}

ssize_t weft_sendto(int fd, const void *buf, size_t len, int flags, const weft_addr *to) {
  int rc = weft__io_buf(buf, &len);
  if (rc) return rc;
  if (to && (!to->len || to->len > sizeof to->u)) return -EINVAL;
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (to) {
    msg.msg_name = (void *)&to->u;
    msg.msg_namelen = to->len;
  }
  return weft__sendmsg_until(fd, &msg, flags, WEFT__NO_DEADLINE);
}
