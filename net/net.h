/* net/net.h: what the files of net/ share (internal). */
#ifndef WEFT_NET_NET_H
#define WEFT_NET_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct msghdr;
struct weft_stream;

/* recvmsg/sendmsg with a deadline (net/socket.c). Suspend. */
ssize_t weft__recvmsg_until(int fd, struct msghdr *msg, int flags, int64_t deadline);
ssize_t weft__sendmsg_until(int fd, const struct msghdr *msg, int flags, int64_t deadline);

/* weft_recv_until for a stream socket's reader (net/stream.c): on epoll
 * a receive that gets less than asked records that the socket is empty,
 * so the next one waits for readiness before trying (the try would fail
 * with EAGAIN: one system call less per message); on io_uring it is
 * weft_recv_until (IORING_RECVSEND_POLL_FIRST measured no gain there:
 * docs/io-choices.md). Suspends. net/socket.c. */
ssize_t weft__recv_stream(int fd, void *buf, size_t len, int64_t deadline);

/* A stream over fd with the reader limit `limit` (0: the default); owns fd
 * from now on (closes it on -ENOMEM). net/stream.c. */
int weft__stream_new(int fd, size_t limit, struct weft_stream **out);

/* The TLS layer under a stream (net/tls.c; weft/tls.h is its public side).
 * fd is the stream's socket; the calls suspend (waiting for readiness)
 * until done or the deadline; deadline 0: never wait (-EAGAIN when the
 * call would block). */
struct weft__tls;
struct weft_tls_ctx;
int weft__tls_new(struct weft__tls **out, int fd, struct weft_tls_ctx *ctx, bool server, const char *server_name);
int weft__tls_handshake(struct weft__tls *t, int fd, const struct weft_tls_ctx *ctx, int64_t deadline);
ssize_t weft__tls_recv(struct weft__tls *t, int fd, void *buf, size_t n, int64_t deadline);
ssize_t weft__tls_send(struct weft__tls *t, int fd, const void *buf, size_t n, int64_t deadline);
int weft__tls_close_notify(struct weft__tls *t, int fd, int64_t deadline); /* 0: sent, or nothing to send */
void weft__tls_free(struct weft__tls *t);
/* The stream is closing under its reader (net/stream.c, CLOSING UNDER A
 * READER), whose socket is about to be shut for reading: from now on a
 * read that meets the end of the socket, or would wait for it, returns 0
 * (end of stream) and leaves the session alive (close_notify may still be
 * sent). Any thread; before the shutdown(2). */
void weft__tls_stop(struct weft__tls *t);
int weft__tls_alpn(const struct weft__tls *t, char *buf, size_t cap);
int weft__tls_server_name(const struct weft__tls *t, char *buf, size_t cap);
const char *weft__tls_version(const struct weft__tls *t);
int weft__tls_error(struct weft__tls *t, char *buf, size_t cap); /* suspends (the lock) */
bool weft__tls_ctx_is_server(const struct weft_tls_ctx *ctx);
/* For a caller that waits for readiness itself (net/transport.c's driver,
 * the only task that uses its TLS layer): one non-blocking SSL call, op
 * one of WEFT__TLS_*: > 0 bytes read or written, 0 done (handshake,
 * shutdown) or end of stream (read: close_notify), -EAGAIN with *want =
 * POLLIN or POLLOUT (what the socket must become before calling again),
 * else the TLS errors of weft/tls.h (fatal: the layer is dead). A write
 * retried after -EAGAIN must pass the same bytes again (at least as many;
 * the memory may have moved). */
enum { WEFT__TLS_HANDSHAKE, WEFT__TLS_READ, WEFT__TLS_WRITE, WEFT__TLS_SHUTDOWN };
ssize_t weft__tls_step(struct weft__tls *t, int op, void *buf, size_t n, unsigned *want);
/* A read step returns -EAGAIN (POLLIN) without a system call when the
 * socket was found empty at the last receive and OpenSSL holds no byte;
 * the caller says when it sees the socket readable again (then the next
 * read step tries the socket). Not while another step runs. */
void weft__tls_readable(struct weft__tls *t);
/* Why the layer died (OpenSSL's words), "" while it lives. Its user only. */
const char *weft__tls_reason(const struct weft__tls *t);
/* After the handshake: the cipher's name (static), NULL before; the
 * peer's certificate (DER) into *out (weft__alloc'ed, *len bytes; NULL and
 * 0 when the peer sent none). 0 or -ENOMEM. */
const char *weft__tls_cipher(const struct weft__tls *t);
int weft__tls_peer_der(const struct weft__tls *t, unsigned char **out, size_t *len);

/* net/stream.c's side of TLS: the stream's layer (NULL: plain), and
 * handing one over (-EINVAL when the stream has one already, is closing,
 * or has bytes buffered either way; the stream owns t from then on, also
 * on error). */
struct weft__tls *weft__stream_tls(const struct weft_stream *s);
int weft__stream_set_tls(struct weft_stream *s, struct weft__tls *t);

/* A server whose connection tasks call fd_fn(fd, &opts, ctx, arg) with the
 * accepted socket (fd_fn owns it) instead of a stream handler
 * (net/server.c; net/transport.c's create_server: ctx is the protocol
 * factory; opts.limit and opts.tls apply to the connection). Suspends (as
 * weft_start_server, without name resolution). */
typedef void (*weft__fnptr)(void);
struct weft_server_opts;
typedef void (*weft__conn_fd_fn)(int fd, const struct weft_server_opts *opts, weft__fnptr ctx, void *arg);
struct weft_server;
struct weft_server_opts;
struct weft_addr;
int weft__start_server_fd(struct weft_server **out, const struct weft_addr *a, weft__conn_fd_fn fd_fn,
                          weft__fnptr ctx, void *arg, const struct weft_server_opts *opts);

/* A server's address for host:port (weft_start_server, weft_create_server):
 * host NULL or "" is every address: "::" (a dual-stack socket: weft_listen
 * clears IPV6_V6ONLY on the IPv6 wildcard) where the system has IPv6, else
 * 0.0.0.0; otherwise the resolver's first address. Suspends. net/server.c. */
int weft__server_resolve(const char *host, uint16_t port, struct weft_addr *out);

/* Remove a socket file at a Unix path (asyncio's stale-socket rule). */
void weft__unix_remove_stale(const struct weft_addr *a);

/* Tests: whether servers started from now on accept with one multishot
 * accept on io_uring (default) or single-shot accepts (the fallback for
 * kernels before 5.19). net/server.c. Any thread. */
void weft__server_set_multishot(bool on);

#endif
