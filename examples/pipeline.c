/* examples/pipeline.c: a shell pipeline run by weft, with the bytes between
 * the stages streamed through the runtime.
 *
 *     pipeline [--workers N] CMD1 CMD2 ... CMDn
 *
 * Starts every stage at once, each as `/bin/sh -c CMDi` with its stdin
 * and stdout as pipes (the first stage's stdin is this program's own; each
 * stage's stderr too), and runs one copier task per link: stage i's stdout
 * is read as a weft_stream and written to stage i+1's stdin stream (drain
 * gives back-pressure: a slow stage slows its producer), the last stage's
 * stdout goes to this program's stdout. When a reader ends, its copier
 * closes the next stage's stdin so that stage sees end of file. Then every
 * stage is waited for (each stage runs in its own process group, so that
 * Ctrl-C, which reaches only this program's group, is handled here); the exit status is the last stage's (a stage killed
 * by a signal: 128 + the signal, as the shell says), and the byte count
 * of each link goes to stderr. Without commands it runs
 * `seq 1 200000 | grep 7 | wc -l`. Ctrl-C cancels the main task (weft_run
 * turns the first SIGINT into a cancellation): the copiers stop and the
 * stages' process groups are killed (exit status 130).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#define MAX_STAGES 32

typedef struct stage_link {
  weft_process *producer;
  weft_stream *from, *to; /* to == NULL: this program's stdout */
  long long bytes;
} stage_link;

static char **cmds;

/* SIGKILL a stage's whole process group: the shell and whatever it
 * started (a shell may fork its command rather than exec it). */
static void kill_stage(weft_process *p) {
  weft_process_kill(p);
  kill(-weft_process_pid(p), SIGKILL);
}
static int nstages, workers;

static int copy_task(void *arg) {
  stage_link *l = arg;
  char buf[16 * 1024]; /* task stacks are 64 KiB by default */
  int rc = 0;
  for (;;) {
    ssize_t n = weft_stream_read(l->from, buf, sizeof buf);
    if (n <= 0) {
      rc = (int)n;
      break;
    }
    l->bytes += n;
    if (l->to) {
      rc = weft_stream_write(l->to, buf, (size_t)n);
      if (!rc) rc = weft_stream_drain(l->to);
    } else {
      size_t off = 0;
      while (off < (size_t)n && rc == 0) {
        ssize_t w = weft_write(1, buf + off, (size_t)n - off);
        if (w < 0) rc = (int)w;
        else off += (size_t)w;
      }
    }
    if (rc) break;
  }
  if (l->to) weft_stream_write_eof(l->to); /* the next stage reads end of file */
  if (rc == -EPIPE) {                         /* the next stage stopped reading (head): */
    weft_process_close_pipe(l->producer, 1);  /* so does this link: SIGPIPE for the producer */
    rc = 0;
  }
  return rc;
}

static int pipeline_main(void *arg) {
  weft_process *p[MAX_STAGES] = {0};
  stage_link links[MAX_STAGES];
  weft_task copiers[MAX_STAGES];
  int started = 0, rc = 0;
  for (int i = 0; i < nstages; i++) {
    weft_process_opts o = {.stdin_mode = i ? WEFT_STDIO_PIPE : WEFT_STDIO_INHERIT,
                           .stdout_mode = WEFT_STDIO_PIPE,
                           .flags = WEFT_PROCESS_SETPGID}; /* its own group: see kill_stage */
    rc = weft_process_shell(&p[i], cmds[i], &o);
    if (rc) {
      fprintf(stderr, "pipeline: %s: %s\n", cmds[i], strerror(-rc));
      break;
    }
    started++;
  }
  int ncopiers = 0;
  for (int i = 0; i < started && !rc; i++) {
    links[i] = (stage_link){p[i], weft_process_stdout(p[i]), i + 1 < nstages ? weft_process_stdin(p[i + 1]) : NULL, 0};
    copiers[i] = weft_spawn(copy_task, &links[i]);
    if (!copiers[i].rec) rc = -errno;
    else ncopiers++;
  }
  int cancelled = 0;
  for (int i = 0; i < ncopiers; i++) {
    int st = weft_join(copiers[i]);
    /* Ctrl-C: the join was cancelled, or (a join may run a copier that
     * had not started yet inline, in this task) the copier was */
    if (st == -ECANCELED && !cancelled) {
      cancelled = 1;
      for (int j = 0; j < ncopiers; j++) weft_cancel(copiers[j]);
      for (int j = 0; j < started; j++) kill_stage(p[j]);
      if (!weft_task_done(copiers[i])) st = weft_join(copiers[i]);
    }
    if (st < 0 && st != -ECANCELED) fprintf(stderr, "pipeline: link %d: %s\n", i, strerror(-st));
    weft_task_release(copiers[i]);
  }
  int status = rc ? 1 : 0;
  for (int i = 0; i < started; i++) {
    if (rc || cancelled) kill_stage(p[i]);
    int code = 0;
    int e = weft_process_wait(p[i], &code);
    if (e == -ECANCELED) e = weft_process_wait(p[i], &code); /* the request was delivered once */
    if (i == started - 1 && !rc) status = code < 0 ? 128 - code : code;
    if (i < ncopiers) fprintf(stderr, "pipeline: stage %d exited %d, %lld bytes out\n", i + 1, code, links[i].bytes);
    weft_process_free(p[i]);
  }
  return cancelled ? -ECANCELED : status;
}

int main(int argc, char **argv) {
  static char *dflt[] = {"seq 1 200000", "grep 7", "wc -l"};
  int i = 1;
  if (i < argc && (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))) {
    fprintf(stderr, "usage: pipeline [--workers N] CMD1 CMD2 ... CMDn   (default: seq 1 200000 | grep 7 | wc -l)\n");
    return 2;
  }
  if (i < argc && !strcmp(argv[i], "--workers")) {
    char *end = NULL;
    long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : -1;
    if (i + 1 >= argc || end == argv[i + 1] || *end || v < 0 || v > 126) { /* weft_config.workers: at most 126 */
      fprintf(stderr, "pipeline: --workers wants an integer from 0 (the CPUs available) to 126\n");
      return 2;
    }
    workers = (int)v;
    i += 2;
  }
  if (i < argc) {
    cmds = argv + i;
    nstages = argc - i;
  } else {
    cmds = dflt;
    nstages = 3;
  }
  if (nstages > MAX_STAGES) {
    fprintf(stderr, "pipeline: at most %d stages\n", MAX_STAGES);
    return 2;
  }
  weft_config cfg = {0};
  cfg.workers = (unsigned)workers;
  int rc = weft_run(pipeline_main, NULL, &cfg);
  if (rc == -EINTR) return 130;
  if (rc < 0) {
    fprintf(stderr, "pipeline: %s\n", strerror(-rc));
    return 1;
  }
  return rc;
}
