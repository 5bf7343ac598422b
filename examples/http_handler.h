/* examples/http_handler.h: the connection handler of http_hello and
 * https_hello: HTTP/1.1 keep-alive, "Hello, World!" to every request.
 *
 * A request ends at its blank line (bodies are not read: the workload sends
 * none); pipelined requests are answered in order, each with its own
 * response, as the reader hands them out one at a time. A request with
 * "Connection: close", or an HTTP/1.0 one without "Connection: keep-alive",
 * is the last: its answer says "Connection: close" and the connection is
 * closed after it (RFC 9112 9.3, 9.6: a client that reads until the close,
 * as ab without -k does, waited for the 30 s idle timeout before); an
 * HTTP/1.0 one with keep-alive is answered "Connection: keep-alive", which
 * an HTTP/1.0 client needs to keep the connection. A client silent for 30 s
 * is dropped. A request head longer than 8 KiB gets "431" and the
 * connection is closed; a client that closes mid-request is dropped. */
#ifndef WEFT_EXAMPLES_HTTP_HANDLER_H
#define WEFT_EXAMPLES_HTTP_HANDLER_H

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <weft/weft.h>

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nServer: weft\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 13\r\n\r\nHello, World!";
static const char RESPONSE_CLOSE[] = "HTTP/1.1 200 OK\r\nServer: weft\r\nContent-Type: text/plain\r\n"
                                     "Content-Length: 13\r\nConnection: close\r\n\r\nHello, World!";
static const char RESPONSE_KEEP_ALIVE[] = "HTTP/1.1 200 OK\r\nServer: weft\r\nContent-Type: text/plain\r\n"
                                          "Content-Length: 13\r\nConnection: keep-alive\r\n\r\nHello, World!";
static const char TOO_LARGE[] = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
                                "Connection: close\r\n\r\n";

enum { KEEP, KEEP_1_0, CLOSE }; /* what a request asks of its connection */

/* Whether the connection outlives this request (head: n bytes, the request
 * line to the blank line): HTTP/1.1 keeps it unless a Connection header
 * lists "close"; HTTP/1.0 closes it unless one lists "keep-alive". Tokens
 * are case-insensitive and comma-separated; a request line that is not
 * HTTP/1.0 counts as 1.1 (the garbage this server answers anyway). */
static int connection_kind(const char *head, size_t n) {
  const char *end = head + n, *eol = memchr(head, '\n', n);
  if (!eol) return KEEP;
  size_t ll = (size_t)(eol - head) - (eol > head && eol[-1] == '\r'); /* the request line, without CRLF */
  bool http10 = ll >= 8 && !memcmp(head + ll - 8, "HTTP/1.0", 8), close_ = false, keep = false;
  for (const char *line = eol + 1; line < end; line = eol + 1) {
    eol = memchr(line, '\n', (size_t)(end - line));
    if (!eol) break;
    if (eol - line < 11 || strncasecmp(line, "connection:", 11)) continue;
    for (const char *t = line + 11; t < eol;) { /* each token of the value */
      while (t < eol && (*t == ' ' || *t == '\t' || *t == ',')) t++;
      const char *te = t;
      while (te < eol && *te != ',' && *te != ' ' && *te != '\t' && *te != '\r') te++;
      if (te - t == 5 && !strncasecmp(t, "close", 5)) close_ = true;
      if (te - t == 10 && !strncasecmp(t, "keep-alive", 10)) keep = true;
      t = te + (te < eol);
    }
  }
  if (close_) return CLOSE;
  if (http10) return keep ? KEEP_1_0 : CLOSE;
  return KEEP;
}

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
    int kind = connection_kind(head, (size_t)n);
    if (kind == CLOSE) {
      weft_stream_write(s, RESPONSE_CLOSE, sizeof RESPONSE_CLOSE - 1);
      return 0; /* the server flushes and closes */
    }
    if (kind == KEEP_1_0 ? weft_stream_write(s, RESPONSE_KEEP_ALIVE, sizeof RESPONSE_KEEP_ALIVE - 1) < 0
                         : weft_stream_write(s, RESPONSE, sizeof RESPONSE - 1) < 0)
      return 0;
    if (weft_stream_buffered(s) && weft_stream_drain(s) < 0) return 0;
  }
}

#endif
