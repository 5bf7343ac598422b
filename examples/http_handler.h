/* examples/http_handler.h: the connection handler of http_hello and
 * https_hello: HTTP/1.1 keep-alive, "Hello, World!" to every request.
 *
 * A request ends at its blank line (bodies are not read: the workload sends
 * none); pipelined requests are answered in order, each with its own
 * response, as the reader hands them out one at a time. A client silent
 * for 30 s is dropped. A request head longer than 8 KiB gets "431" and the
 * connection is closed; a client that closes mid-request is dropped. */
#ifndef WEFT_EXAMPLES_HTTP_HANDLER_H
#define WEFT_EXAMPLES_HTTP_HANDLER_H

#include <errno.h>

#include <weft/weft.h>

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nServer: weft\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 13\r\n\r\nHello, World!";
static const char TOO_LARGE[] = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
                                "Connection: close\r\n\r\n";

static int serve(weft_stream *s, void *arg) {
  (void)arg;
  weft_set_nodelay(weft_stream_fd(s), true);
  weft_stream_set_limit(s, 8192);
  weft_stream_set_timeout(s, 30 * 1000000000LL); /* an idle client is dropped after 30 s */
  char head[8192];
  for (;;) {
    ssize_t n = weft_stream_readuntil(s, "\r\n\r\n", 4, head, sizeof head, NULL);
    if (n == -ENOBUFS) {
      weft_stream_write(s, TOO_LARGE, sizeof TOO_LARGE - 1);
      return 0; /* the server flushes and closes */
    }
    if (n < 0) return 0; /* end of stream (maybe mid-request), reset, cancelled */
    if (weft_stream_write(s, RESPONSE, sizeof RESPONSE - 1) < 0) return 0;
    if (weft_stream_buffered(s) && weft_stream_drain(s) < 0) return 0;
  }
}

#endif
