/* process/signal.c: signal handlers that run as tasks
 * (loop.add_signal_handler), and weft_run's SIGINT.
 *
 * HOW. While a signal has at least one watch, its sigaction is our
 * handler (the previous action is saved and restored after the last
 * watch goes). The handler, in whichever thread the kernel picked, writes
 * 1 to the eventfd of every watch of that signal (write(2) and lock-free
 * atomics: async-signal-safe); each watch's task reads its eventfd on its
 * worker's reactor and calls the user's function. An eventfd counts, so
 * deliveries during a call become one more call. The handler also counts
 * the delivery in the watch's `raised` (release; the task loads it with
 * acquire before fn): the order ThreadSanitizer cannot see through the
 * eventfd (with migrating tasks it reported the program's own writes
 * before raise() as racing with fn's reads).
 *
 * WHY NOT signalfd. A signalfd sees a signal only while it is blocked in
 * every thread of the process; otherwise the kernel delivers it to a thread
 * that has it unblocked (for SIGINT: the default action, death). Blocking
 * it in weft's workers is not enough: the program's main thread and
 * threads of other libraries would all have to block it too, which weft
 * cannot do for them. The handler works whatever the threads' masks
 * (asyncio's set_wakeup_fd is the same technique). SA_RESTART keeps
 * system calls in other code from failing with EINTR; the reactors retry
 * an interrupted wait.
 *
 * REMOVAL vs A RUNNING HANDLER. Each signal's slot counts the handlers
 * running (`busy`). Removal clears the watch's pointer, then waits until
 * `busy` is 0 before closing the eventfd, so a handler never writes to a
 * descriptor number that was closed and reused. Both sides use seq_cst
 * (handler: increment busy, then load the pointer; removal: clear the
 * pointer, then load busy): a Dekker pattern, which acquire/release alone
 * does not order.
 *
 * REMOVAL FROM THE HANDLER ITSELF. fn may remove its own watch (as an
 * asyncio handler may call remove_signal_handler): the task cannot join
 * itself, so remove marks the watch REMOVED_BY_FN and the task frees it
 * once fn has returned.
 *
 * THE RUNTIME'S END. Shutdown cancels the watches' tasks, which take their
 * watches out of the slots (the previous action comes back, as
 * loop.close() removes the handlers left); once every task has ended,
 * weft__signal_runtime_end frees the watches nobody removed (their
 * eventfds and memory). Every watch is on `all_watches` until freed.
 *
 * Registration (add/remove, sigaction, all_watches) is under one mutex:
 * rare, never inside a handler.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <weft/io.h>
#include <weft/process.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/task.h"
#include "process/signal.h"

#define NSIGS 65
#define MAX_WATCHES 64

struct weft_signal_watch {
  int signo;
  int efd;               /* O_CLOEXEC | O_NONBLOCK */
  weft_signal_fn fn;
  void *arg;
  weft_task task;
  _Atomic int stopping;  /* set by remove before it cancels the task (REMOVED_BY_FN: by fn itself) */
  _Atomic unsigned long raised; /* the handler's count, incremented before its eventfd write */
  bool oneshot;          /* weft_run's SIGINT watch (SA_RESETHAND) */
  weft_runtime *rt;      /* the runtime of the task */
  struct weft_signal_watch *next; /* all_watches, under reg_lock */
};

enum { REMOVED = 1, REMOVED_BY_FN = 2 }; /* values of stopping */

typedef struct sigslot {
  _Atomic(weft_signal_watch *) watches[MAX_WATCHES];
  _Atomic int busy;      /* handlers running for this signal */
  unsigned count;        /* under reg_lock */
  bool oneshot;          /* under reg_lock: installed with SA_RESETHAND */
  bool oneshot_spent;    /* under reg_lock: the kernel had reset the one-shot action when another watch replaced it */
  struct sigaction prev; /* under reg_lock: restored after the last watch */
} sigslot;

static sigslot slots[NSIGS];
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static weft_signal_watch *all_watches; /* under reg_lock: every watch not yet freed */

static void on_signal(int signo) {
  int saved = errno;
  sigslot *s = &slots[signo];
  weft__fetch_add(&s->busy, 1, SEQ_CST); /* seq_cst: pairs with remove's store of NULL, then load of busy */
  for (int i = 0; i < MAX_WATCHES; i++) {
    weft_signal_watch *w = weft__load(&s->watches[i], SEQ_CST); /* see above */
    if (w) {
      uint64_t one = 1;
      /* release: pairs with the acquire load in watch_task after its read:
       * what the signalling thread did before the signal happens before fn
       * (ThreadSanitizer sees no order through an eventfd read on the ring;
       * a lock-free atomic is async-signal-safe) */
      weft__fetch_add(&w->raised, 1, RELEASE);
      ssize_t n = write(w->efd, &one, sizeof one);
      (void)n; /* EAGAIN: the counter is full, a call is due anyway */
    }
  }
  weft__fetch_sub(&s->busy, 1, SEQ_CST);
  errno = saved;
}

static bool refused(int signo) {
  return signo <= 0 || signo >= NSIGS || signo == SIGKILL || signo == SIGSTOP || signo == SIGSEGV ||
         signo == SIGBUS || signo == SIGFPE || signo == SIGILL;
}

static int install(sigslot *s, int signo, bool oneshot) {
  struct sigaction sa = {0}, old;
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART | (oneshot ? SA_RESETHAND : 0);
  if (sigaction(signo, &sa, &old) < 0) return -errno;
  if (s->count == 0) {
    s->prev = old;
    s->oneshot_spent = false;
  } else if (s->oneshot) { /* a plain watch joins a one-shot one: was the one-shot action used up? */
    s->oneshot_spent = old.sa_handler != on_signal;
  }
  s->oneshot = oneshot;
  return 0;
}

/* Take w out of its signal's slot, restoring the previous action after the
 * last watch. Nothing happens when it was taken out already. */
static void unregister_locked(weft_signal_watch *w) {
  sigslot *s = &slots[w->signo];
  for (int i = 0; i < MAX_WATCHES; i++) {
    if (weft__load(&s->watches[i], RELAXED) == w) { /* relaxed: written only under reg_lock */
      weft__store(&s->watches[i], NULL, SEQ_CST); /* then the busy load in remove: see the file comment */
      if (--s->count == 0) {
        /* weft_run's one-shot watch goes back only while the action is
         * still ours (or SIG_DFL, where SA_RESETHAND put it), as asyncio.run
         * restores SIGINT only while its own handler is in place: a handler
         * the program installed during the run stays (it was replaced by
         * SIG_DFL) */
        struct sigaction cur;
        if (!w->oneshot || sigaction(w->signo, NULL, &cur) != 0 || cur.sa_handler == on_signal ||
            cur.sa_handler == SIG_DFL)
          sigaction(w->signo, &s->prev, NULL);
      } else if (!s->oneshot && !w->oneshot) {
        /* only one-shot watches left: the action goes back to what it was
         * before the plain watches came (weft_run's SIGINT: the first one
         * cancels main, the next one kills) */
        bool plain = false;
        for (int j = 0; j < MAX_WATCHES && !plain; j++) {
          weft_signal_watch *o = weft__load(&s->watches[j], RELAXED); /* relaxed: under reg_lock */
          plain = o && !o->oneshot;
        }
        if (!plain && s->oneshot_spent) {
          struct sigaction dfl = {0}; /* where SA_RESETHAND had put it */
          dfl.sa_handler = SIG_DFL;
          sigemptyset(&dfl.sa_mask);
          sigaction(w->signo, &dfl, NULL);
          s->oneshot = true;
        } else if (!plain) {
          install(s, w->signo, true);
        }
      }
      break;
    }
  }
}

static void unregister(weft_signal_watch *w) {
  pthread_mutex_lock(&reg_lock);
  unregister_locked(w);
  pthread_mutex_unlock(&reg_lock);
}

/* Take w off all_watches, close its eventfd once no handler can be writing
 * to it (w is out of its slot), drop its task's handle and free it. */
static void free_watch(weft_signal_watch *w, bool in_task) {
  pthread_mutex_lock(&reg_lock);
  for (weft_signal_watch **p = &all_watches; *p; p = &(*p)->next)
    if (*p == w) {
      *p = w->next;
      break;
    }
  pthread_mutex_unlock(&reg_lock);
  while (weft__load(&slots[w->signo].busy, SEQ_CST)) /* seq_cst: after the slot's store of NULL, see above */
    if (!in_task || weft_yield() < 0) sched_yield();
  weft_task_release(w->task);
  close(w->efd);
  weft__free(w, sizeof *w);
}

static int watch_task(void *arg) {
  weft_signal_watch *w = arg;
  /* acquire: pairs with the release store in remove */
  while (!weft__load(&w->stopping, ACQUIRE)) {
    uint64_t v;
    ssize_t n = weft_read(w->efd, &v, sizeof v);
    if (n == (ssize_t)sizeof v) {
      (void)weft__load(&w->raised, ACQUIRE); /* pairs with the handler's release increment */
      w->fn(w->signo, w->arg);
    } else if (n < 0 && n != -ECANCELED && n != -EAGAIN && n != -EINTR) {
      return (int)n;
    }
    /* Cancelled but not by remove: only the runtime's shutdown cancels this
     * task. As loop.close() removes the handlers left, the signal gets its
     * previous action back and the task ends (remove still frees w). */
    if (!weft__load(&w->stopping, ACQUIRE) && weft_cancelling(weft_current()) > 0) {
      unregister(w);
      return 0;
    }
  }
  /* acquire: as above */
  if (weft__load(&w->stopping, ACQUIRE) == REMOVED_BY_FN) free_watch(w, true);
  return 0;
}

static void remove_task(weft_signal_watch *w);

int weft__signal_watch_add(weft_signal_watch **out, int signo, weft_signal_fn fn, void *arg, bool oneshot) {
  if (!out || !fn || refused(signo)) return -EINVAL;
  if (weft_backend() < 0) return -EINVAL;
  weft_signal_watch *w = weft__zalloc(sizeof *w);
  if (!w) return -ENOMEM;
  w->signo = signo;
  w->oneshot = oneshot;
  w->rt = weft__task_self()->rt;
  w->fn = fn;
  w->arg = arg;
  w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->efd < 0) {
    int e = -errno;
    weft__free(w, sizeof *w);
    return e;
  }
  weft_spawn_opts so = {.name = "weft-signal-watch"}; /* for dumps and weft_tasks */
  w->task = weft_spawn_ex(watch_task, w, &so);
  if (!w->task.rec) {
    int e = -errno;
    close(w->efd);
    weft__free(w, sizeof *w);
    return e;
  }
  sigslot *s = &slots[signo];
  int rc = -EBUSY;
  pthread_mutex_lock(&reg_lock);
  for (int i = 0; i < MAX_WATCHES; i++) {
    if (weft__load(&s->watches[i], RELAXED)) continue; /* relaxed: written only under reg_lock */
    rc = 0;
    if (s->count == 0 || (s->oneshot && !oneshot)) rc = install(s, signo, oneshot);
    if (!rc) {
      weft__store(&s->watches[i], w, SEQ_CST); /* the handler's seq_cst load sees a whole watch */
      s->count++;
      w->next = all_watches;
      all_watches = w;
    }
    break;
  }
  pthread_mutex_unlock(&reg_lock);
  if (rc) {
    weft__store(&w->stopping, REMOVED, RELEASE);
    weft_cancel(w->task);
    remove_task(w);
    return rc;
  }
  *out = w;
  return 0;
}

int weft_signal_watch_add(weft_signal_watch **out, int signo, weft_signal_fn fn, void *arg) {
  return weft__signal_watch_add(out, signo, fn, arg, false);
}

/* Stop w's task (joining it whatever cancellations arrive) and free w. */
static void remove_task(weft_signal_watch *w) {
  int st;
  do {
    st = weft_join(w->task);
  } while (st == -ECANCELED && !weft_task_done(w->task));
  free_watch(w, true); /* a handler may still hold w: it waits for it to leave */
}

int weft_signal_watch_remove(weft_signal_watch *w) {
  /* outside a task the join below would fail and w be freed under its task */
  weft_task self = weft_current();
  if (!w || weft_task_is_null(self)) return -EINVAL;
  unregister(w);
  if (self.rec == w->task.rec) { /* from fn: the task frees w when fn returns */
    weft__store(&w->stopping, REMOVED_BY_FN, RELEASE); /* pairs with the acquire in watch_task */
    return 0;
  }
  weft__store(&w->stopping, REMOVED, RELEASE); /* pairs with the acquire in watch_task */
  weft_cancel(w->task);
  remove_task(w);
  return 0;
}

void weft__signal_runtime_end(weft_runtime *rt) {
  for (;;) {
    weft_signal_watch *w;
    pthread_mutex_lock(&reg_lock);
    for (w = all_watches; w && w->rt != rt; w = w->next) {
    }
    if (w) unregister_locked(w); /* its task ended without it (a read error) */
    pthread_mutex_unlock(&reg_lock);
    if (!w) return;
    free_watch(w, false);
  }
}

/* ------------------------------------------------------------ weft_run's SIGINT */

static void cancel_main_once(weft__run_sigint *r) {
  int no = 0;
  /* relaxed: the CAS only elects one canceller; main was published by the
   * seq_cst store of armed, which the caller loaded (or made) */
  if (weft__cas(&r->cancelled, &no, 1, RELAXED, RELAXED)) weft_cancel(r->main);
}

static int on_sigint(int signo, void *arg) {
  weft__run_sigint *r = arg;
  /* A SIGINT watch of the program's own takes SIGINT over, as
   * loop.add_signal_handler(SIGINT) replaces asyncio.run's handler. Only a
   * plain watch is the program's: another one-shot watch is a weft_run of
   * another thread, started at the same time (counting it, each run took
   * the other's watch for the program's, and the SIGINT cancelled
   * neither main: it was lost). */
  bool plain = false;
  pthread_mutex_lock(&reg_lock);
  for (int i = 0; i < MAX_WATCHES && !plain; i++) {
    weft_signal_watch *o = weft__load(&slots[SIGINT].watches[i], RELAXED); /* relaxed: under reg_lock */
    plain = o && !o->oneshot;
  }
  pthread_mutex_unlock(&reg_lock);
  if (plain) return 0;
  weft__store(&r->interrupted, 1, SEQ_CST);           /* then the load of armed: see signal.h */
  if (weft__load(&r->armed, SEQ_CST)) cancel_main_once(r); /* pairs with the store in arm */
  return 0;
}

void weft__run_sigint_arm(weft__run_sigint *r, weft_task main) {
  r->main = main;
  weft__store(&r->armed, 1, SEQ_CST);                   /* publishes main; then the load below */
  if (weft__load(&r->interrupted, SEQ_CST)) cancel_main_once(r);
}

bool weft__run_sigint_wanted(void) {
  struct sigaction sa;
  sigset_t cur;
  if (sigaction(SIGINT, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL || (sa.sa_flags & SA_SIGINFO)) return false;
  if (pthread_sigmask(SIG_BLOCK, NULL, &cur) != 0 || sigismember(&cur, SIGINT)) return false;
  return true;
}

int weft__run_sigint_begin(void *arg) {
  weft__run_sigint *r = arg;
  return weft__signal_watch_add(&r->watch, SIGINT, on_sigint, r, true);
}

int weft__run_sigint_end(void *arg) {
  weft__run_sigint *r = arg;
  return weft_signal_watch_remove(r->watch);
}
