/* weft/protocol.h: asyncio's transports and protocols (the low-level,
 * callback API of asyncio's event loop) on weft's runtime (net/transport.c).
 *
 * A PROTOCOL is a struct of callbacks and the user's pointer; a TRANSPORT is
 * the connection that calls them and that the protocol writes to. As in
 * asyncio: create_connection/create_server/connect_accepted_socket make a
 * transport for a stream socket (TCP or Unix), create_datagram_endpoint one
 * for a UDP socket.
 *
 * EXECUTION MODEL. Each transport has one DRIVER TASK, pinned to the worker
 * it starts on for its whole life (a server places it as start_server places
 * its handler tasks: round-robin by default). The driver receives, calls
 * the callbacks, flushes the write buffer and closes the socket. So:
 *  - every callback of one transport runs in its driver task, one at a time,
 *    never two at once, in this order: connection_made first; then
 *    data_received/buffer_updated (in the byte stream's order) and
 *    eof_received (at most once, after all data); pause_writing and
 *    resume_writing alternate (pause first) anywhere in between;
 *    connection_lost exactly once and last (also when the driver is
 *    cancelled, e.g. by weft_server_shutdown: connection_lost(-ECANCELED));
 *  - callbacks must not suspend (no weft_sleep, no I/O call, no lock
 *    wait): they run between the driver's receives and would stall the
 *    connection. A callback may spawn tasks, and call any transport
 *    function, close and abort included. In debug mode (WEFT_DEBUG=1) a
 *    callback that suspended is reported;
 *  - the transport functions (write, close, pause_reading, ...) may be
 *    called from any task of the runtime, on any worker, at once. The write
 *    buffer is shared under a per-transport spinlock (held for a few
 *    instructions; never across a system call or an allocation); whoever
 *    holds the buffer's SEND TOKEN (taken under the lock) is the only one
 *    sending, so bytes leave in the order the writes were made. A write
 *    from another task with nothing buffered sends at once (one send(2),
 *    MSG_DONTWAIT) and buffers only what the kernel did not take; a write
 *    from a callback (the driver) on io_uring is copied and goes out as a
 *    ring send operation with the worker's next batch of submissions (no
 *    system call of its own; a datagram endpoint's callbacks send as other
 *    tasks do); the driver flushes what is buffered when the socket is
 *    writable;
 *  - pause_writing/resume_writing run in the driver too: after the callback
 *    during which the buffer went above the high watermark (or, for a write
 *    from another task, as soon as the driver runs), not inside write()
 *    itself as asyncio does; on io_uring, once the ring send of the
 *    callback's writes has completed (at once: it never waits for room),
 *    counting only what the kernel did not take, and no data_received
 *    runs in between.
 *
 * LIFETIME. The driver holds the transport until connection_lost returns;
 * the protocol's callbacks may use it freely until then. Any other task
 * that keeps the pointer takes a reference (weft_transport_hold, released
 * with weft_transport_release); the transport is freed when the driver has
 * ended and the last reference is gone. After connection_lost the calls
 * still work on a held transport and report it closed (-EPIPE, is_closing).
 *
 * TLS. weft_create_connection_tls, and create_server with opts.tls, make
 * TLS transports (weft/tls.h's contexts, OpenSSL through net/tls.c): the
 * driver runs the handshake (within the context's handshake timeout) before
 * connection_made, then the callbacks see and write the decrypted bytes,
 * exactly as on a plain transport (watermarks count plaintext bytes).
 * close sends close_notify after the buffer; abort does not; write_eof
 * sends close_notify then shuts the socket down for writing; the peer's
 * close_notify is eof_received; a peer that closes without it (or in the
 * middle of a record) is connection_lost(-ECONNRESET), a protocol error
 * connection_lost(-EPROTO). A handshake that fails (weft/tls.h's codes:
 * -EKEYREJECTED we rejected the peer's certificate, -ECONNABORTED the
 * handshake failed, -ETIMEDOUT it took too long) or is cancelled calls
 * connection_lost(that error) ALONE: connection_made never ran (the
 * protocol still learns the end of every connection it was made for);
 * get_extra_info "tls_error" then gives OpenSSL's reason. The SSL object
 * is the driver's alone: a write from another task is copied and
 * encrypted by the driver.
 *
 * Errors: negative errnos as in weft/net.h. -EINVAL bad input; -EPIPE a
 * write after close/write_eof/abort or the connection's end; a send error
 * (-ECONNRESET, -EPIPE) ends the connection: connection_lost(that error).
 */
#ifndef WEFT_PROTOCOL_H
#define WEFT_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <weft/net.h>
#include <weft/tls.h>

struct iovec;

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_transport weft_transport;

/* asyncio.Protocol / asyncio.BufferedProtocol. Any callback may be NULL
 * (nothing happens), except that a protocol gives data_received or the
 * buffered pair (get_buffer and buffer_updated), not both (-EINVAL). */
typedef struct weft_protocol {
  void *user; /* passed to every callback */
  void (*connection_made)(weft_transport *t, void *user);
  /* len >= 1 bytes that arrived; data is valid during the call only. */
  void (*data_received)(weft_transport *t, const void *data, size_t len, void *user);
  /* The peer's end of stream. Return true to keep the transport half open
   * (the protocol may still write; it closes the transport itself); false
   * (or no callback) closes it (flushing what is buffered). TLS too: after
   * the peer's close_notify the protocol may still write (TLS 1.3 allows a
   * half-closed session), where asyncio's SSL transport ignores true and
   * closes. */
  bool (*eof_received)(weft_transport *t, void *user);
  /* The end: err 0 (a close, an abort, end of stream) or a negative errno
   * (-ECONNRESET, -ECANCELED the driver was cancelled, ...). Exactly once,
   * last. */
  void (*connection_lost)(weft_transport *t, int err, void *user);
  void (*pause_writing)(weft_transport *t, void *user);  /* the buffer went above high */
  void (*resume_writing)(weft_transport *t, void *user); /* it drained to low or below */
  /* Buffered protocol: a buffer of *len >= 1 bytes (sizehint is the
   * transport's receive size, a hint only) to receive into, or NULL (the
   * connection is then aborted: connection_lost(-ENOBUFS)). The memory
   * must stay valid until buffer_updated or connection_lost: on io_uring
   * the kernel receives into it while the driver waits. */
  void *(*get_buffer)(weft_transport *t, size_t sizehint, size_t *len, void *user);
  /* n >= 1 bytes were written at the start of the last buffer given. */
  void (*buffer_updated)(weft_transport *t, size_t n, void *user);
} weft_protocol;

/* A server's protocol factory (asyncio's protocol_factory): fill *out for
 * one new connection; 0 to accept it, a negative errno to refuse it (the
 * socket is closed, no callback runs). Runs in the connection's driver task
 * (it may suspend). */
typedef int (*weft_protocol_factory)(weft_protocol *out, void *arg);

/* loop.create_connection: connect (weft_connect_host: happy eyeballs) or
 * to a Unix path, and start the transport with protocol p (copied). Returns
 * once connection_made has run. *out (if not NULL) receives the transport
 * with a reference the caller must release (weft_transport_release).
 * Suspends. Errors: weft_connect_host's; -EINVAL (p invalid); -ENOMEM. */
WEFT_API int weft_create_connection(const char *host, uint16_t port, const weft_protocol *p, int64_t deadline_ns,
                                    weft_transport **out);
WEFT_API int weft_create_unix_connection(const char *path, const weft_protocol *p, int64_t deadline_ns,
                                         weft_transport **out);

/* create_connection with ssl=ctx: connect as weft_create_connection, then
 * the driver runs the client handshake (within the context's handshake
 * timeout and deadline_ns, whichever comes first); returns once
 * connection_made has run. server_name (NULL: host) is sent as SNI (unless
 * it is an IP address) and is what the server's certificate is checked
 * against when ctx verifies. On a handshake failure connection_lost(err)
 * runs (alone, see TLS above) and the call returns err; cancelling the
 * call during the handshake cancels the handshake (connection_lost
 * (-ECANCELED) alone, the socket closed at once). Suspends. Errors:
 * weft_create_connection's; -EINVAL (host or ctx NULL, a server context); the
 * TLS errors of weft/tls.h (-EKEYREJECTED, -ECONNABORTED, -ETIMEDOUT). */
WEFT_API int weft_create_connection_tls(const char *host, uint16_t port, const weft_protocol *p, weft_tls_ctx *ctx,
                                        const char *server_name, int64_t deadline_ns, weft_transport **out);

/* loop.connect_accepted_socket: a transport over fd, an already connected
 * stream socket (made non-blocking here); the transport owns fd from now
 * on, also on error. Returns once connection_made has run; *out as
 * create_connection. Suspends. Errors: -EBADF; -EINVAL (also a datagram or
 * a listening socket); -ENOTCONN a socket never connected; -ENOTSOCK;
 * -ENOMEM. */
WEFT_API int weft_connect_accepted_socket(int fd, const weft_protocol *p, weft_transport **out);

/* loop.create_server: listen as weft_start_server (same addresses, options,
 * placement of the per-connection tasks, and the same weft_server: close,
 * wait_closed, shutdown, free), and give each accepted connection the
 * protocol factory(arg) makes, driven by the connection's task. Shutdown
 * cancels the drivers still running: connection_lost(-ECANCELED).
 * opts.tls (a server context): every connection is a TLS transport (see
 * TLS above); a failed handshake gives its protocol connection_lost(err)
 * alone and the server goes on. opts.limit is each connection's receive size (0: 16 KiB; the receive
 * in flight holds that much per connection, idle or not). Suspends.
 * Errors: weft_start_server's. */
WEFT_API int weft_create_server(weft_server **out, const char *host, uint16_t port, weft_protocol_factory factory,
                                void *arg, const weft_server_opts *opts);
WEFT_API int weft_create_unix_server(weft_server **out, const char *path, weft_protocol_factory factory, void *arg,
                                     const weft_server_opts *opts);

/* write(data): send len bytes, in order after every earlier write. Never
 * suspends: what the kernel does not take now is copied into the buffer
 * and sent by the driver. Returns 0 (the bytes are sent or buffered), or
 * -EPIPE (closing, closed, write_eof called), the error that ended the
 * connection, -ENOMEM (nothing was buffered), -EINVAL. Any task. */
WEFT_API int weft_transport_write(weft_transport *t, const void *data, size_t len);

/* writelines/writev: the buffers in order, as one write (one sendmsg). At
 * most IOV_MAX buffers (-EINVAL), as weft_stream_writev (asyncio's
 * writelines takes any number). */
WEFT_API int weft_transport_writev(weft_transport *t, const struct iovec *iov, int iovcnt);

/* write_eof: shutdown(SHUT_WR) once the buffer has been sent; later writes
 * get -EPIPE. Returns 0, -EPIPE (closing). Does not suspend. Any task. */
WEFT_API int weft_transport_write_eof(weft_transport *t);

/* can_write_eof: true (stream sockets can half-close). */
WEFT_API bool weft_transport_can_write_eof(const weft_transport *t);

/* close: stop receiving now, send what is buffered, then close the socket
 * and call connection_lost(0) (or the error that ended the flush).
 * Idempotent. Does not suspend. Any task, callbacks included. */
WEFT_API void weft_transport_close(weft_transport *t);

/* abort: close now: drop the buffer, close the socket (SO_LINGER 0: the
 * peer sees a reset) and call connection_lost(0). Does not suspend. */
WEFT_API void weft_transport_abort(weft_transport *t);

/* is_closing: close, abort or the connection's end has begun. */
WEFT_API bool weft_transport_is_closing(weft_transport *t);

/* get_extra_info(name): "peername" and "sockname" (out: a weft_addr),
 * "socket" (out: an int, the descriptor; the transport still owns it).
 * Returns 0, -ENOENT (an unknown name), -EINVAL (out too small), -EBADF
 * ("socket" once closed), or the kernel's error. "peername" and "sockname"
 * are read when the transport is made (as asyncio caches them), so they
 * answer the same for as long as the handle is valid, after
 * connection_lost too (an error the kernel gave then, say -ENOTCONN, is
 * answered every time). Does not suspend.
 * On a TLS transport also (any time, after connection_lost too; each
 * returns the length it wrote):
 *   "cipher", "tls_version", "alpn" (out: a NUL-terminated string, "" when
 *       none was negotiated): "TLS_AES_256_GCM_SHA384", "TLSv1.3", "h2";
 *   "peercert" (out: the peer's certificate, DER; 0 bytes when it sent
 *       none, as a server's client usually does): d2i_X509 reads it;
 *   "tls_error" (out: a string): why the TLS layer failed, OpenSSL's
 *       reason ("certificate verify failed: certificate has expired",
 *       "handshake timed out"), "" while it has not.
 * These are -ENOENT on a plain transport; -EINVAL when out is too small
 * (160 bytes always hold a string but "alpn", 256 "alpn"). */
WEFT_API int weft_transport_get_extra_info(weft_transport *t, const char *name, void *out, size_t len);

/* pause_reading/resume_reading: no data_received/buffer_updated/
 * eof_received while paused (bytes received meanwhile are delivered on
 * resume). Return 0, or -EPIPE when closing, -EINVAL (NULL, or a datagram
 * transport). Idempotent. Any task. */
WEFT_API int weft_transport_pause_reading(weft_transport *t);
WEFT_API int weft_transport_resume_reading(weft_transport *t);
WEFT_API bool weft_transport_is_reading(weft_transport *t);

/* set_write_buffer_limits(high, low): the watermarks of pause_writing and
 * resume_writing. WEFT_TRANSPORT_DEFAULT for high: 64 KiB, or 4 * low when
 * low is given (as asyncio); for low: high / 4. Errors: -EINVAL (low >
 * high). Any task. */
#define WEFT_TRANSPORT_DEFAULT SIZE_MAX
WEFT_API int weft_transport_set_write_buffer_limits(weft_transport *t, size_t high, size_t low);
WEFT_API void weft_transport_get_write_buffer_limits(weft_transport *t, size_t *high, size_t *low);

/* get_write_buffer_size: bytes written and not yet sent. On io_uring the
 * bytes of a write made from a callback count until the ring send that
 * carries them completes, with the worker's next batch of submissions
 * (right after the callback), even when the kernel then takes them whole,
 * where asyncio's write() has sent them before it returns: read inside
 * that callback the figure is higher than asyncio's, and it drops to what
 * the kernel did not take once the send completes. pause_writing does not
 * count them until then (above). Any task. */
WEFT_API size_t weft_transport_get_write_buffer_size(weft_transport *t);

/* A reference for a task other than the driver (see LIFETIME). */
WEFT_API void weft_transport_hold(weft_transport *t);
WEFT_API void weft_transport_release(weft_transport *t);

/* ------------------------------------------------------------ datagrams */

typedef struct weft_datagram_transport weft_datagram_transport;

/* asyncio.DatagramProtocol. Callbacks may be NULL; their order: connection_made
 * first, connection_lost once and last; the same execution model as above. */
typedef struct weft_datagram_protocol {
  void *user;
  void (*connection_made)(weft_datagram_transport *t, void *user);
  /* One datagram (len may be 0) from addr; both valid during the call. */
  void (*datagram_received)(weft_datagram_transport *t, const void *data, size_t len, const weft_addr *addr,
                            void *user);
  /* An error the kernel reported for an earlier send (an ICMP error on a
   * connected socket: -ECONNREFUSED), or the failure of a buffered
   * datagram's send: one call per failed datagram, in order (while 16
   * such errors wait for their calls, buffered datagrams wait to be sent,
   * so a sendto then may find the buffer full: -ENOBUFS). The transport
   * goes on. */
  void (*error_received)(weft_datagram_transport *t, int err, void *user);
  void (*connection_lost)(weft_datagram_transport *t, int err, void *user);
} weft_datagram_protocol;

/* loop.create_datagram_endpoint: a UDP socket bound to local (if not NULL:
 * port 0 = any) and connected to remote (if not NULL); at least one of them
 * (their families must agree). Returns once connection_made has run; *out
 * as create_connection. Suspends. Errors: -EINVAL; -EADDRINUSE; the
 * kernel's; -ENOMEM. */
WEFT_API int weft_create_datagram_endpoint(const weft_addr *local, const weft_addr *remote,
                                           const weft_datagram_protocol *p, weft_datagram_transport **out);

/* sendto: one datagram to addr (NULL: the connected peer). Never suspends:
 * when the kernel cannot take it now, it is buffered (up to the high
 * watermark, 64 KiB, then -ENOBUFS) and sent by the driver. Returns 0, or
 * the send's immediate error (-ECONNREFUSED, -EMSGSIZE, -EDESTADDRREQ with
 * no peer, ...), -EPIPE (closing), -EINVAL (also an addr other than the
 * connected peer's, as asyncio's ValueError: nothing is sent). Any task. */
WEFT_API int weft_datagram_sendto(weft_datagram_transport *t, const void *data, size_t len, const weft_addr *addr);

/* close (send what is buffered, then close), abort (drop it), is_closing,
 * get_extra_info, the buffered size, hold/release: as the stream
 * transport's ("peername" only on a connected endpoint). */
WEFT_API void weft_datagram_close(weft_datagram_transport *t);
WEFT_API void weft_datagram_abort(weft_datagram_transport *t);
WEFT_API bool weft_datagram_is_closing(weft_datagram_transport *t);
WEFT_API int weft_datagram_get_extra_info(weft_datagram_transport *t, const char *name, void *out, size_t len);
WEFT_API size_t weft_datagram_get_write_buffer_size(weft_datagram_transport *t);
WEFT_API void weft_datagram_hold(weft_datagram_transport *t);
WEFT_API void weft_datagram_release(weft_datagram_transport *t);

#ifdef __cplusplus
}
#endif

#endif
