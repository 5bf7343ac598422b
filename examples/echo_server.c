/* examples/echo_server.c: a TCP echo server on weft's streams.
 *
 *     echo_server [--host H] [--port P] [--workers N] [--max-s S] [--placement rr|local]
 *
 * Listens on H:P (default 127.0.0.1:7000) and echoes every byte on every
 * connection, one handler task per connection. Flags, signals (SIGINT and
 * SIGTERM stop it cleanly) and shutdown are examples/server_main.h's. This
 * is the tcp_echo server of ../shared/BENCHMARKS.md (bench/run serve_echo).
 */
#define _GNU_SOURCE
#include "server_main.h"

/* Echo until end of stream: read what came, hand it back. On epoll a write
 * sends at once when the kernel takes it; on io_uring it leaves with the
 * worker's next batch of I/O and counts as buffered until then, so drain
 * (asyncio's write-then-drain) waits for that batch, on this worker. */
static int echo(weft_stream *s, void *arg) {
  (void)arg;
  weft_set_nodelay(weft_stream_fd(s), true);
  char buf[16384];
  for (;;) {
    ssize_t n = weft_stream_read(s, buf, sizeof buf);
    if (n <= 0) return (int)n;
    if (weft_stream_write(s, buf, (size_t)n) < 0) return -1;
    if (weft_stream_buffered(s) && weft_stream_drain(s) < 0) return -1;
  }
}

int main(int argc, char **argv) {
  return example_server_main(&(example_server){.name = "echo_server", .port = 7000, .handler = echo}, argc, argv);
}
