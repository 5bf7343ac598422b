/* tests/test_signal.c: signal watches (handlers that run as tasks) and
 * weft_run's SIGINT: a watched signal runs its function in a task, from
 * another thread's kill too, several watches of one signal each run, the
 * previous action comes back after the last watch, bad signals are
 * refused; the first SIGINT cancels weft_run's main task (-EINTR), a
 * second one kills, and a program's own SIGINT handler is left alone. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include <weft/weft.h>

#include "test.h"

static atomic_int calls[2];

static int on_usr1(int signo, void *arg) {
  if (signo != SIGUSR1) return -1;
  atomic_fetch_add(&calls[(long)arg], 1);
  return weft_sleep_ns(1000000); /* a handler may suspend */
}

/* Wait (up to 10 s) until signo has a handler: weft_run installs its
 * SIGINT watch just after main started. */
static void wait_handled(int signo) {
  struct timespec ms = {0, 1000000};
  for (int i = 0; i < 10000; i++) {
    struct sigaction sa;
    sigaction(signo, NULL, &sa);
    if (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN) return;
    nanosleep(&ms, NULL);
  }
}

static void *kill_later(void *arg) {
  struct timespec ts = {0, 50 * 1000000};
  nanosleep(&ts, NULL);
  if ((int)(long)arg == SIGINT) wait_handled(SIGINT);
  kill(getpid(), (int)(long)arg);
  return NULL;
}

static int wait_calls(int i, int want) {
  for (int k = 0; k < 2000 && atomic_load(&calls[i]) < want; k++)
    if (weft_sleep_ns(1000000)) return -1;
  return atomic_load(&calls[i]);
}

static int watch_main(void *arg) {
  weft_signal_watch *a, *b;
  ASSERT_EQ(weft_signal_watch_add(&a, SIGUSR1, on_usr1, (void *)0), 0);
  ASSERT_EQ(weft_signal_watch_add(&b, SIGUSR1, on_usr1, (void *)1), 0);
  for (int i = 1; i <= 5; i++) {
    ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
    ASSERT_EQ(wait_calls(0, i), i);
    ASSERT_EQ(wait_calls(1, i), i);
  }
  /* from a thread outside the runtime */
  pthread_t th;
  pthread_create(&th, NULL, kill_later, (void *)(long)SIGUSR1);
  ASSERT_EQ(wait_calls(0, 6), 6);
  ASSERT_EQ(wait_calls(1, 6), 6); /* b's task runs apart from a's: wait for it too before removing b */
  pthread_join(th, NULL);
  ASSERT_EQ(weft_signal_watch_remove(b), 0);
  ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
  ASSERT_EQ(wait_calls(0, 7), 7);
  ASSERT_EQ(atomic_load(&calls[1]), 6);
  ASSERT_EQ(weft_signal_watch_remove(a), 0);
  struct sigaction sa;
  sigaction(SIGUSR1, NULL, &sa);
  ASSERT_TRUE(sa.sa_handler == SIG_IGN); /* the action before the first watch */
  weft_signal_watch *c;
  ASSERT_EQ(weft_signal_watch_add(&c, SIGKILL, on_usr1, NULL), -EINVAL);
  ASSERT_EQ(weft_signal_watch_add(&c, 0, on_usr1, NULL), -EINVAL);
  ASSERT_EQ(weft_signal_watch_add(&c, 65, on_usr1, NULL), -EINVAL);
  ASSERT_EQ(weft_signal_watch_add(&c, SIGSEGV, on_usr1, NULL), -EINVAL);
  ASSERT_EQ(weft_signal_watch_add(&c, SIGUSR2, NULL, NULL), -EINVAL);
  ASSERT_EQ(weft_signal_watch_remove(NULL), -EINVAL);
  return 0;
}

TEST(watch_runs_handlers_as_tasks) {
  signal(SIGUSR1, SIG_IGN);
  weft_signal_watch *c;
  ASSERT_EQ(weft_signal_watch_add(&c, SIGUSR1, on_usr1, NULL), -EINVAL); /* outside a task */
  weft_config cfg = {0};
  cfg.workers = 2;
  ASSERT_EQ(weft_run(watch_main, NULL, &cfg), 0);
}

/* ------------------------------------------------------------ weft_run's SIGINT */

static atomic_int cleaned;

static int sleepy_main(void *arg) {
  pthread_t th;
  pthread_create(&th, NULL, kill_later, (void *)(long)SIGINT);
  pthread_detach(th);
  int rc = weft_sleep_ns(30LL * 1000000000);
  if (rc == -ECANCELED) atomic_store(&cleaned, 1); /* the task may clean up */
  return rc;
}

TEST(first_sigint_cancels_main) {
  weft_config cfg = {0};
  cfg.workers = 2;
  ASSERT_EQ(weft_run(sleepy_main, NULL, &cfg), -EINTR);
  ASSERT_EQ(atomic_load(&cleaned), 1);
  struct sigaction sa;
  sigaction(SIGINT, NULL, &sa);
  ASSERT_TRUE(sa.sa_handler == SIG_DFL); /* restored */
  /* a second run works the same way */
  atomic_store(&cleaned, 0);
  ASSERT_EQ(weft_run(sleepy_main, NULL, &cfg), -EINTR);
  ASSERT_EQ(atomic_load(&cleaned), 1);
}

static void *kill_twice(void *arg) {
  struct timespec ts = {0, 50 * 1000000};
  wait_handled(SIGINT);
  kill(getpid(), SIGINT);
  nanosleep(&ts, NULL);
  kill(getpid(), SIGINT);
  return NULL;
}

static int stubborn_main(void *arg) {
  pthread_t th;
  pthread_create(&th, NULL, kill_twice, NULL);
  pthread_detach(th);
  for (int i = 0; i < 300; i++) weft_sleep_ns(10 * 1000000); /* ignores the cancellation */
  return 0;
}

TEST(second_sigint_kills) {
  pid_t pid = fork();
  if (pid == 0) {
    weft_config cfg = {0};
    cfg.workers = 2;
    weft_run(stubborn_main, NULL, &cfg);
    _exit(3);
  }
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(st));
  ASSERT_EQ(WTERMSIG(st), SIGINT);
}

static atomic_int own_handler;
static void on_int(int s) { atomic_store(&own_handler, s); }

static int own_main(void *arg) {
  kill(getpid(), SIGINT);
  for (int i = 0; i < 1000 && !atomic_load(&own_handler); i++) weft_sleep_ns(1000000);
  return 5;
}

TEST(program_sigint_handler_left_alone) {
  signal(SIGINT, on_int);
  weft_config cfg = {0};
  cfg.workers = 2;
  ASSERT_EQ(weft_run(own_main, NULL, &cfg), 5);
  ASSERT_EQ(atomic_load(&own_handler), SIGINT);
  struct sigaction sa;
  sigaction(SIGINT, NULL, &sa);
  ASSERT_TRUE(sa.sa_handler == on_int);
}

TEST_MAIN()
