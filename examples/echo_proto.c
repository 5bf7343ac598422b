/* examples/echo_proto.c: the TCP echo server of echo_server.c, written
 * against the transport/protocol API (weft/protocol.h) instead of streams.
 *
 *     echo_proto [--host H] [--port P] [--workers N] [--max-s S] [--placement rr|local]
 *
 * Each connection gets a protocol whose data_received writes the bytes back
 * (a write sends at once and buffers only what the kernel did not take) and
 * whose eof_received lets the transport close. Back-pressure as asyncio's
 * echo servers do it: when the peer stops reading and the write buffer goes
 * above the high watermark, pause_writing pauses reading; resume_writing
 * resumes it. No state per connection beyond the transport, so the
 * protocol's user pointer is unused. Flags, signals and shutdown are
 * examples/server_main.h's; bench/run serve_echo_proto runs it.
 */
#define _GNU_SOURCE
#include "server_main.h"

static void on_data(weft_transport *t, const void *data, size_t len, void *user) {
  (void)user;
  weft_transport_write(t, data, len); /* an error ends the connection: connection_lost says so */
}

static void on_pause(weft_transport *t, void *user) {
  (void)user;
  weft_transport_pause_reading(t);
}

static void on_resume(weft_transport *t, void *user) {
  (void)user;
  weft_transport_resume_reading(t);
}

static void on_made(weft_transport *t, void *user) {
  (void)user;
  int fd;
  if (weft_transport_get_extra_info(t, "socket", &fd, sizeof fd) == 0) weft_set_nodelay(fd, true);
}

static int factory(weft_protocol *p, void *arg) {
  (void)arg;
  *p = (weft_protocol){.connection_made = on_made, .data_received = on_data, .pause_writing = on_pause,
                       .resume_writing = on_resume};
  return 0;
}

int main(int argc, char **argv) {
  return example_server_main(&(example_server){.name = "echo_proto", .port = 7000, .factory = factory}, argc, argv);
}
