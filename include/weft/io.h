/* weft/io.h: the reactor that carries a worker's I/O and timers.
 *
 * Each worker owns one io_uring ring (or, where io_uring cannot be set up or
 * WEFT_BACKEND=epoll asks for it, one epoll instance with the same API). The
 * file and descriptor operations follow; this header names the backend. */
#ifndef WEFT_IO_H
#define WEFT_IO_H

#include <weft/core.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The backend of the calling task's runtime (WEFT_BACKEND_URING or
 * WEFT_BACKEND_EPOLL), or -EINVAL outside a task. */
WEFT_API int weft_backend(void);

/* "io_uring" or "epoll", for reports. */
WEFT_API const char *weft_backend_name(int backend);

#ifdef __cplusplus
}
#endif

#endif
