/* weft/process.h: subprocesses and signals (process/).
 *
 * asyncio's create_subprocess_exec/_shell, Process and communicate, and
 * loop.add_signal_handler, on the calling task's runtime.
 *
 * Spawning never blocks a worker: the child is started on the blocking
 * pool with clone(CLONE_VM|CLONE_VFORK|CLONE_PIDFD) (posix_spawn's way:
 * no copy of the parent's memory), runs only async-signal-safe calls until
 * execve, starts with every signal handler reset to SIG_DFL (SIGPIPE too)
 * and an empty signal mask, and inherits no descriptor but its three
 * standard ones (as Python's close_fds=True: every descriptor weft opens is
 * O_CLOEXEC, and the child marks every other one above 2 close-on-exec:
 * close_range(2), or where that is refused (Linux before 5.11, an older
 * seccomp profile) each one /proc/self/fd lists). A failed exec
 * (missing file, no permission, bad working directory) is the spawn call's
 * own error (-ENOENT, -EACCES, ...), not a child that exits 127.
 *
 * Waiting costs no thread: the handle holds a pidfd, which the waiting
 * task polls on its worker's reactor (io_uring or epoll); the child is
 * reaped with waitid(P_PIDFD).
 *
 * SIGPIPE. Writing to a pipe whose reader is gone raises SIGPIPE, which
 * kills a process by default. Creating a runtime sets SIGPIPE to SIG_IGN
 * when it is still SIG_DFL (as Python does at startup: weft/core.h), so
 * such a write returns -EPIPE; a program's own SIGPIPE handling is left
 * alone. Children get SIGPIPE back at SIG_DFL.
 */
#ifndef WEFT_PROCESS_H
#define WEFT_PROCESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <weft/core.h>
#include <weft/net.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ spawning */

/* What one of the child's standard descriptors is connected to. */
enum weft_stdio {
  WEFT_STDIO_INHERIT = 0, /* the parent's own descriptor (the default) */
  WEFT_STDIO_PIPE = 1,    /* a pipe to the parent, as a weft_stream */
  WEFT_STDIO_DEVNULL = 2, /* /dev/null */
  WEFT_STDIO_FD = 3,      /* the given descriptor (the caller keeps it; the child shares its open
                             file, O_NONBLOCK included: one from weft_stream_fd is non-blocking there) */
  WEFT_STDIO_STDOUT = 4,  /* stderr only: the same as the child's stdout */
};

/* Options: a zero-initialised struct (or NULL) means every default. */
enum {
  WEFT_PROCESS_NEW_SESSION = 1u << 0, /* setsid() in the child */
  WEFT_PROCESS_SETPGID = 1u << 1,     /* setpgid(0, pgid) in the child (pgid 0: a new group) */
};

typedef struct weft_process_opts {
  int stdin_mode, stdout_mode, stderr_mode; /* enum weft_stdio */
  int stdin_fd, stdout_fd, stderr_fd;       /* for WEFT_STDIO_FD */
  char *const *env;  /* NULL-terminated "NAME=value" list; NULL: the parent's environ */
  const char *cwd;   /* working directory; NULL: the parent's */
  unsigned flags;    /* WEFT_PROCESS_* */
  pid_t pgid;        /* with WEFT_PROCESS_SETPGID */
} weft_process_opts;

typedef struct weft_process weft_process;

/* create_subprocess_exec: run file with argv (argv[0] first, NULL last).
 * A file without '/' is searched in PATH (the env option's PATH when it
 * has one, else the parent's, else "/bin:/usr/bin"). *out receives the
 * handle, which the caller frees with weft_process_free. Suspends (the
 * clone runs on the blocking pool; a cancellation that arrives while the
 * child starts is left pending: the child exists and *out is set).
 * Errors: -EINVAL NULL out/file/argv, empty argv, an unknown stdio mode,
 * WEFT_STDIO_STDOUT for stdin or stdout, a negative WEFT_STDIO_FD
 * descriptor, unknown flags, a call outside a task; -E2BIG an argv or
 * env of more than 65536 entries; the exec's or chdir's errno (-ENOENT a missing file or
 * working directory, -EACCES, -ENOEXEC, -ENOTDIR, ...); -EMFILE, -ENOMEM,
 * -EAGAIN (no pool thread, or clone's); -ECANCELED (cancelled while the
 * start still waited for a pool thread: no child). No descriptor stays open and no
 * child is left on an error path. */
WEFT_API int weft_process_exec(weft_process **out, const char *file, char *const argv[],
                               const weft_process_opts *opts);

/* create_subprocess_shell: /bin/sh -c cmd. Suspends. Errors as above. */
WEFT_API int weft_process_shell(weft_process **out, const char *cmd, const weft_process_opts *opts);

/* ------------------------------------------------------------ the handle */

/* The child's pid (stays valid as a number after the child was reaped);
 * -EINVAL for NULL. */
WEFT_API pid_t weft_process_pid(const weft_process *p);

/* The parent's ends of the pipes (WEFT_STDIO_PIPE), or NULL. The process
 * owns them (weft_process_free closes them). The child's stdin is a writer
 * (weft_stream_write/drain; weft_stream_write_eof closes the pipe, so the
 * child reads end of file), its stdout and stderr are readers. */
WEFT_API weft_stream *weft_process_stdin(weft_process *p);
WEFT_API weft_stream *weft_process_stdout(weft_process *p);
WEFT_API weft_stream *weft_process_stderr(weft_process *p);

/* Close the parent's end of the child's stdin (which = 0), stdout (1) or
 * stderr (2) pipe now and free its stream (the accessor then returns
 * NULL): a writer's buffered bytes are flushed first (at most 10 s). To
 * stop reading a producer, as a shell pipeline does when its consumer
 * exits: the child gets SIGPIPE (or EPIPE) at its next write. A task
 * waiting in a read of that stream returns end of stream first (and must
 * not read it again: weft/net.h, "Closing under a reader"); no other task
 * may be writing it. Suspends. Errors: -EINVAL NULL p or a bad which;
 * -EBADF that descriptor is not a pipe or was closed already; the error
 * that ended a stdin's flush (weft_stream_wait_closed: -ETIMEDOUT,
 * -ECANCELED, ...; -EPIPE and -ECONNRESET are not errors here). */
WEFT_API int weft_process_close_pipe(weft_process *p, int which);

/* Wait for the child to exit and reap it; *returncode (if not NULL)
 * receives its exit status, or minus the signal number that killed it (as
 * Python's returncode). Returns at once when it was reaped already. Any
 * number of tasks may wait at once. It returns at the child's exit even
 * while a process the child started keeps its pipes open (reads of them,
 * and communicate, go on until that process closes them), as
 * subprocess.Popen.wait; asyncio's Process.wait (3.11) waits for the pipes
 * to close too when it began before the exit. A stopped child (SIGSTOP)
 * has not exited: the wait goes on. Suspends.
 * Errors: -ECANCELED; -ETIMEDOUT (the _until form's CLOCK_MONOTONIC
 * deadline); -EINVAL NULL p, outside a task; -ECHILD the program set
 * SIGCHLD to SIG_IGN, so the kernel reaped the child itself and its
 * status is lost. */
WEFT_API int weft_process_wait(weft_process *p, int *returncode);
WEFT_API int weft_process_wait_until(weft_process *p, int64_t deadline_ns, int *returncode);

/* The return code once the child has exited (0 and *returncode set; a
 * child that exited is reaped here, without waiting, as Popen.poll), else
 * -EBUSY (Python's None: it still runs). Does not suspend. Any thread.
 * Errors: -EINVAL NULL p; -ECHILD as weft_process_wait's. */
WEFT_API int weft_process_returncode(const weft_process *p, int *returncode);

/* send_signal (pidfd_send_signal: never a recycled pid), terminate
 * (SIGTERM), kill (SIGKILL). Do not suspend. Any thread.
 * Errors: -ESRCH the child was reaped already (ProcessLookupError);
 * -EINVAL a bad signal number or NULL p; -EPERM. */
WEFT_API int weft_process_send_signal(weft_process *p, int sig);
WEFT_API int weft_process_terminate(weft_process *p);
WEFT_API int weft_process_kill(weft_process *p);

/* communicate(input): write input to the child's stdin and close it, read
 * its stdout and stderr to their ends (concurrently, in tasks: no
 * deadlock however much each side writes), then wait for the exit.
 * Each pipe is used only if it is one (a stdin that is not a pipe with
 * input_len > 0 is -EINVAL). Output past a buffer's capacity is read and
 * dropped (so the child never blocks); out_len/err_len count every byte
 * the child wrote, and the call then returns -ENOBUFS (after the exit;
 * returncode is set). A child that exits without reading all its input is
 * not an error (-EPIPE is ignored, as asyncio does).
 *
 * Timeout and cancellation: when deadline_ns (CLOCK_MONOTONIC,
 * WEFT_NO_DEADLINE for none; 0 in a zeroed struct also means none) passes
 * or the calling task is cancelled, the readers and writer are stopped
 * and the child is sent SIGKILL, unless WEFT_COMMUNICATE_LEAVE_RUNNING;
 * the call returns -ETIMEDOUT or -ECANCELED. The child is not reaped then:
 * weft_process_wait or weft_process_free does it. What was read so far
 * stays in the buffers (the lengths say how much). Suspends.
 * Errors: also -EINVAL (NULL p or c, a NULL buffer with a capacity, an
 * input_len past SSIZE_MAX, unknown flags: nothing is written, the child
 * is left alone), the pipes' read/write errors, -ENOMEM. */
enum { WEFT_COMMUNICATE_LEAVE_RUNNING = 1u << 0 };

typedef struct weft_communicate {
  const void *input;   /* written to stdin, then stdin is closed */
  size_t input_len;
  void *out;           /* stdout's bytes (when stdout is a pipe) */
  size_t out_cap, out_len;
  void *err;           /* stderr's bytes (when stderr is a pipe) */
  size_t err_cap, err_len;
  int64_t deadline_ns; /* 0 or WEFT_NO_DEADLINE: none */
  unsigned flags;      /* WEFT_COMMUNICATE_* */
  int returncode;      /* out: as weft_process_wait's */
} weft_communicate;

WEFT_API int weft_process_communicate(weft_process *p, weft_communicate *c);

/* Close the pipes and free the handle (a task waiting in a read of one of
 * them returns end of stream first, as with weft_process_close_pipe). A
 * child not yet reaped is reaped in the background by a task of
 * the calling task's runtime (it is not signalled: kill it first to end
 * it); if that runtime shuts down before the child exits, the child is
 * left to the process's own exit (a zombie until then). Call it from a
 * task of the runtime; from elsewhere a child that has not exited yet is
 * left unreaped (documented above). Suspends (a stdin stream's buffered
 * bytes are flushed, for at most 10 s; a cancellation ends the flush and
 * stays requested: the caller's next suspension returns -ECANCELED).
 * No other task may be in a call on p then (wait, communicate, a write to
 * its stdin) or make one after: join such tasks first; only a read of one
 * of its pipes is woken, as said above.
 * Returns 0, or -EINVAL for NULL. */
WEFT_API int weft_process_free(weft_process *p);

/* ------------------------------------------------------------ signals */

/* loop.add_signal_handler: run fn(signo, arg) in a task of the calling
 * task's runtime each time signo arrives (deliveries that arrive while fn
 * runs are coalesced into one more call, as the kernel coalesces pending
 * signals). How: a sigaction handler (installed while at least one watch
 * of signo exists; the previous action is restored after the last) writes
 * to each watch's eventfd, async-signal-safely, and the watch's task reads
 * it on its worker's reactor. The handler runs in whichever thread the
 * kernel picks, so no thread's signal mask needs changing (a signalfd
 * would need signo blocked in every thread of the process, including
 * threads weft did not create). SA_RESTART is set. fn's status is ignored;
 * fn may suspend. Not for SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE,
 * SIGILL (-EINVAL). Does not suspend, except on an error after the
 * watch's task was spawned (-EBUSY, sigaction's), which waits for that
 * task to end. Errors: -EINVAL (bad signal, NULL out/fn, outside a task); -EMFILE;
 * -ENOMEM; -EBUSY more than 64 watches of one signal. */
typedef struct weft_signal_watch weft_signal_watch;
typedef int (*weft_signal_fn)(int signo, void *arg);

WEFT_API int weft_signal_watch_add(weft_signal_watch **out, int signo, weft_signal_fn fn, void *arg);

/* remove_signal_handler: stop the watch's task (waiting for a running fn
 * to return), restore the previous action when it was the last watch of
 * its signal, and free it. fn may remove its own watch: the call returns
 * at once, no further call comes, and the watch is freed when fn returns.
 * Watches left at the runtime's shutdown are removed and freed by it (as
 * loop.close()): their pointers are then invalid. Suspends (not
 * cancellably). Returns 0, or -EINVAL for NULL or outside a task (nothing
 * changes then). */
WEFT_API int weft_signal_watch_remove(weft_signal_watch *w);

/* weft_run and SIGINT: when SIGINT's action is SIG_DFL and SIGINT is not
 * blocked in the calling thread (the program did not take SIGINT over),
 * weft_run installs a one-shot handler for the time of the run: the first
 * SIGINT cancels the main task (asyncio.run's KeyboardInterrupt) and puts
 * SIGINT back to SIG_DFL, so a second SIGINT kills the process as usual.
 * A SIGINT watch of the program's own takes SIGINT over while it exists
 * (main is not cancelled); once it is removed, the one-shot handler is
 * back (or SIG_DFL, when the first SIGINT came before the program's watch).
 * weft_run then returns -EINTR if main ended with -ECANCELED. At the end
 * of the run SIGINT gets SIG_DFL back only while the one-shot handler is
 * still in place: a handler the program installed during the run
 * (sigaction) stays, as asyncio.run leaves one it did not install. Runs of
 * several threads at once: those that found SIGINT at SIG_DFL each
 * installed the handler, and the first SIGINT cancels each of their mains;
 * a run that began after another's handler was in place leaves SIGINT
 * alone (it is not SIG_DFL then). The explicit runtime API does none of
 * this. */

#ifdef __cplusplus
}
#endif

#endif
