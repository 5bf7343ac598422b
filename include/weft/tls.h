/* weft/tls.h: TLS on streams (OpenSSL 3; net/tls.c).
 *
 * A context (weft_tls_ctx) holds what every connection of one side shares:
 * the certificate chain and key, the trusted CAs, the verification mode and
 * the ALPN protocols. A stream becomes a TLS stream when it is opened with
 * weft_open_connection_tls, accepted by a server whose opts.tls is set, or
 * upgraded with weft_stream_start_tls; from then on every stream call of
 * weft/net.h (read, readexactly, readuntil, limits, write, drain,
 * watermarks, write_eof, close, wait_closed) works unchanged on the
 * decrypted bytes. The TLS work happens on the task that makes the stream
 * call; it waits for the socket's readiness on its worker's reactor. The
 * same contexts make TLS transports (weft/protocol.h: a server's opts.tls,
 * weft_create_connection_tls), where the transport's driver task does it.
 *
 * Errors specific to TLS (besides the stream calls' own):
 *   -ECONNABORTED  the handshake failed (a protocol error, the peer sent no
 *                  TLS, no common protocol or cipher, the peer rejected our
 *                  certificate, or the peer closed during the handshake);
 *   -EKEYREJECTED  we rejected the peer's certificate (untrusted CA, wrong
 *                  host name, expired, self-signed);
 *   -ETIMEDOUT     the handshake did not finish within the context's
 *                  handshake timeout;
 *   -EPROTO        a TLS protocol error after the handshake (a bad record,
 *                  a renegotiation attempt: renegotiation is refused);
 *   -ECONNRESET    on a read: the peer closed the connection without a
 *                  close_notify (asyncio/ssl's "EOF occurred in violation of
 *                  protocol": a truncation cannot be told from a normal end).
 *                  That read reports the error once; the stream is at end
 *                  of stream after it (later reads return 0), and later
 *                  writes and drains return -ECONNRESET (weft/net.h's
 *                  drain).
 * A read that meets the peer's close_notify returns 0 (end of stream).
 * After any other TLS error (or a handshake cut short by its timeout or a
 * cancellation) the TLS layer is unusable: reads and writes return -EPIPE,
 * and close/wait_closed send no close_notify.
 * In debug mode (WEFT_DEBUG=1 or weft_config.debug) a failed context or
 * handshake prints OpenSSL's reasons (and the verification error) to stderr.
 */
#ifndef WEFT_TLS_H
#define WEFT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <weft/core.h>
#include <weft/net.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_tls_ctx weft_tls_ctx;

/* weft_tls_opts.verify */
enum weft_tls_verify {
  WEFT_TLS_VERIFY_DEFAULT = 0, /* a client verifies the server; a server asks for no client certificate */
  WEFT_TLS_VERIFY_PEER = 1,    /* verify the peer (a server then requires a client certificate) */
  WEFT_TLS_VERIFY_NONE = 2,    /* accept any peer certificate (a client: no verification, no host check) */
};

typedef struct weft_tls_opts {
  const char *cert_file; /* PEM certificate chain (leaf first): required for a server, optional for a client */
  const char *key_file;  /* PEM private key; NULL: in cert_file */
  const char *ca_file;   /* PEM bundle of trusted CAs; NULL: the system's default paths */
  int verify;            /* enum weft_tls_verify */
  const char *alpn;      /* ALPN protocols, comma-separated, most preferred first ("h2,http/1.1"); NULL: none */
  int64_t handshake_timeout_ns; /* 0: 60 s (asyncio's ssl_handshake_timeout); < 0: -EINVAL */
} weft_tls_opts;

/* A client (server = false) or server context. TLS 1.2 and 1.3 only;
 * renegotiation is refused. A server selects, among the protocols the
 * client offers, the first of its own alpn list that the client offered
 * (none in common: the handshake goes on without ALPN). Does not suspend.
 * Any thread. Errors: -EINVAL bad options (a server without cert_file, an
 * empty or over-long ALPN name, a file that does not parse as PEM, a key
 * that does not match the certificate); -ENOENT/-EACCES a file that cannot
 * be read; -ENOMEM. */
WEFT_API int weft_tls_ctx_new(weft_tls_ctx **out, bool server, const weft_tls_opts *opts);

/* Free a context. Every stream and server made with it must be closed
 * first (wait_closed / weft_server_free). NULL is a no-op. Any thread. */
WEFT_API void weft_tls_ctx_free(weft_tls_ctx *ctx);

/* open_connection with TLS: connect (weft_open_connection), then run the
 * client handshake within the context's handshake timeout (and the
 * deadline, whichever comes first). server_name (NULL: host) is sent as
 * SNI (unless it is an IP address) and is what the server's certificate
 * is checked against when the context verifies. Suspends. Errors:
 * weft_open_connection's; -EINVAL ctx is a server context or NULL; the
 * TLS errors above (the connection is closed). */
WEFT_API int weft_open_connection_tls(const char *host, uint16_t port, int64_t deadline_ns, weft_tls_ctx *ctx,
                                      const char *server_name, weft_stream **out);

/* start_tls: upgrade an open plain stream (nothing may be buffered for
 * writing: drain first) to TLS, as client (server_side false, server_name
 * as above; NULL: no SNI and, when verifying, -EINVAL) or server, and run
 * the handshake within the context's handshake timeout. Bytes the reader
 * had already buffered would be lost to the TLS layer: -EINVAL then
 * (asyncio reads none ahead either when start_tls is used on a protocol
 * boundary). On a handshake error the stream stays open but unusable for
 * anything but close/wait_closed (-EPIPE / the error). Suspends. Errors:
 * -EINVAL (already TLS, buffered bytes, bad ctx); the TLS errors above. */
WEFT_API int weft_stream_start_tls(weft_stream *s, weft_tls_ctx *ctx, bool server_side, const char *server_name);

/* Whether the stream speaks TLS. */
WEFT_API bool weft_stream_is_tls(const weft_stream *s);

/* The ALPN protocol negotiated into buf (NUL-terminated): its length, 0
 * when none was. Errors: -EINVAL not a TLS stream; -ENOSPC buf too small. */
WEFT_API int weft_stream_tls_alpn(const weft_stream *s, char *buf, size_t cap);

/* On a server's stream, the SNI host name the client sent into buf: its
 * length, 0 when none. Errors as weft_stream_tls_alpn. */
WEFT_API int weft_stream_tls_server_name(const weft_stream *s, char *buf, size_t cap);

/* Why the stream's TLS layer failed (OpenSSL's reason: "certificate
 * verify failed: certificate has expired", "...:wrong version number",
 * "handshake timed out", ...) into buf (NUL-terminated): its length, 0
 * while it has not failed. To learn why a client handshake failed, open a
 * plain connection and weft_stream_start_tls it (weft_open_connection_tls
 * closes the stream on failure). Suspends (briefly, for the reader/writer
 * lock). Errors: -EINVAL not a TLS stream, outside a task; -ENOSPC buf too
 * small (cap 160 is always enough); -ECANCELED. */
WEFT_API int weft_stream_tls_error(weft_stream *s, char *buf, size_t cap);

/* The negotiated protocol version ("TLSv1.3"), or NULL. */
WEFT_API const char *weft_stream_tls_version(const weft_stream *s);

#ifdef __cplusplus
}
#endif

#endif
