/* fixq__parallel: the worker threads behind `threads=N`.
 *
 * Workers are started on first use and kept: a pthread_create + join costs
 * 20-40 us on a virtual machine, about a tenth of a 128x1024x1024 GEMM.
 * Tasks are claimed, not assigned: the caller claims them like any worker,
 * so a worker that is slow to wake costs the call nothing but its share.  One
 * atomic word holds the region number, its task count and the next task to
 * claim, so a claim is only ever made on the region it names; fn and ctx
 * stay put until every claimed task is done.  A region of n tasks wakes
 * workers 0 .. n - 2 only (each has its own condition variable); a worker
 * that took part polls for SPIN_NS before it sleeps again, so back-to-back
 * calls (a model's layers, a benchmark loop) find it awake.
 *
 * One region runs on the pool at a time; a caller that finds it busy
 * (another thread's region, or a task of one calling in again) runs its
 * tasks on threads of its own.  A task is never dropped: what no thread
 * takes, the caller runs.  Tasks must not fork: fork() waits for the running
 * region.  The child starts with no workers (they do not survive the fork)
 * and makes new ones on demand. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "fixq_internal.h"

#define POOL_MAX 63     /* workers kept; more tasks are claimed by the threads there are */
#define SPIN_NS 20000   /* a worker polls this long for the next region before it sleeps */

static struct {
  pthread_mutex_t busy; /* held by the caller running a region */
  pthread_mutex_t m;    /* guards asleep[] and the waits on wake[] / done */
  pthread_cond_t done;
  pthread_cond_t wake[POOL_MAX];
  int asleep[POOL_MAX];
  int workers;          /* started (under busy) */
  uint64_t word;        /* atomic: region number << 32 | task count << 16 | next task */
  int finished;         /* atomic: tasks of this region not yet run to the end */
  fixq__task_fn fn;
  void *ctx;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t region_of(uint64_t word) { return word >> 32; }

/* Worker w: polls (when it took part in the last region) and then sleeps
 * until a region other than `seen` that has a task for it (more than w + 1
 * tasks); returns that region's number. */
static uint64_t next_region(int w, uint64_t seen, int poll) {
  uint64_t word;
  if (poll) {
    const uint64_t start = now_ns();
    for (unsigned i = 1;; i++) {
      word = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
      if (region_of(word) != seen && (int)(word >> 16 & 0xFFFF) > w + 1) return region_of(word);
      if (i % 64 == 0 && now_ns() - start > SPIN_NS) break;
      relax();
    }
  }
  pthread_mutex_lock(&pool.m);
  pool.asleep[w] = 1;
  for (;;) {
    word = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
    if (region_of(word) != seen && (int)(word >> 16 & 0xFFFF) > w + 1) break;
    pthread_cond_wait(&pool.wake[w], &pool.m);
  }
  pool.asleep[w] = 0;
  pthread_mutex_unlock(&pool.m);
  return region_of(word);
}

/* Claims and runs tasks of region `region` until none is left; returns how many it ran. */
static int run_claimed(uint64_t region) {
  int ran = 0;
  uint64_t word = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
  for (;;) {
    if (region_of(word) != region || (word & 0xFFFF) >= (word >> 16 & 0xFFFF)) return ran;
    if (!__atomic_compare_exchange_n(&pool.word, &word, word + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
    pool.fn(pool.ctx, (int)(word & 0xFFFF));
    ran++;
    word = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
  }
}

typedef struct {
  int w;
  uint64_t seen; /* the region number when it was started */
} worker_start;

static void *worker(void *arg) {
  const worker_start start = *(worker_start *)arg;
  free(arg);
  uint64_t seen = start.seen;
  int ran = 1;
  for (;;) {
    seen = next_region(start.w, seen, ran > 0);
    ran = run_claimed(seen);
    if (ran > 0 && __atomic_sub_fetch(&pool.finished, ran, __ATOMIC_ACQ_REL) == 0) {
      pthread_mutex_lock(&pool.m);
      pthread_cond_signal(&pool.done);
      pthread_mutex_unlock(&pool.m);
    }
  }
  return NULL;
}

/* Blocks the asynchronous signals in threads started while it is in force
 * (they inherit it), so that those go to the application's threads; a fault
 * (SIGSEGV, SIGBUS, SIGFPE, SIGILL, ...) stays with the thread that raised it. */
static void block_signals(sigset_t *old) {
  sigset_t set;
  sigfillset(&set);
  const int sync[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS};
  for (size_t i = 0; i < sizeof sync / sizeof sync[0]; i++) sigdelset(&set, sync[i]);
  pthread_sigmask(SIG_SETMASK, &set, old);
}

/* ---- a caller that finds the pool busy: threads of its own ---------------- */

typedef struct {
  fixq__task_fn fn;
  void *ctx;
  int n;
  int next; /* atomic */
} spawned_region;

static void *run_spawned_tasks(void *arg) {
  spawned_region *r = arg;
  for (int t; (t = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED)) < r->n;) r->fn(r->ctx, t);
  return NULL;
}

static void run_spawned(int n, fixq__task_fn fn, void *ctx) {
  spawned_region r = {fn, ctx, n, 0};
  const int extra = n - 1 < POOL_MAX ? n - 1 : POOL_MAX;
  pthread_t tid[POOL_MAX];
  int started = 0;
  sigset_t old;
  block_signals(&old);
  while (started < extra && pthread_create(&tid[started], NULL, run_spawned_tasks, &r) == 0) started++;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  run_spawned_tasks(&r);
  for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
}

/* ---- the pool ---------------------------------------------------------------- */

static void fork_prepare(void) { pthread_mutex_lock(&pool.busy); }
static void fork_parent(void) { pthread_mutex_unlock(&pool.busy); }
static void fork_child(void) {
  /* only the forking thread exists here; it holds busy (fork_prepare) */
  pthread_mutex_init(&pool.m, NULL);
  pthread_cond_init(&pool.done, NULL);
  for (int w = 0; w < pool.workers; w++) {
    pthread_cond_init(&pool.wake[w], NULL);
    pool.asleep[w] = 0;
  }
  pool.workers = 0;
  pthread_mutex_unlock(&pool.busy);
}

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static void pool_init(void) {
  for (int w = 0; w < POOL_MAX; w++) pthread_cond_init(&pool.wake[w], NULL);
  pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* Worker number pool.workers, detached (it runs until the process ends). */
static int start_worker(void) {
  worker_start *s = malloc(sizeof *s);
  pthread_t tid;
  pthread_attr_t attr;
  if (s == NULL) return 0;
  /* the region changes only under busy, as here */
  *s = (worker_start){pool.workers, region_of(__atomic_load_n(&pool.word, __ATOMIC_RELAXED))};
  int ok = pthread_attr_init(&attr) == 0;
  if (ok) {
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ok = pthread_create(&tid, &attr, worker, s) == 0;
    pthread_attr_destroy(&attr);
  }
  if (!ok) free(s);
  return ok;
}

void fixq__parallel(int n, fixq__task_fn fn, void *ctx) {
  if (n <= 1) {
    if (n == 1) fn(ctx, 0);
    return;
  }
  pthread_once(&pool_once, pool_init);
  if (n > 0xFFFF || pthread_mutex_trylock(&pool.busy) != 0) { /* another region holds the pool */
    run_spawned(n, fn, ctx);
    return;
  }
  const int want = n - 1 < POOL_MAX ? n - 1 : POOL_MAX;
  if (pool.workers < want) {
    sigset_t old;
    block_signals(&old);
    while (pool.workers < want && start_worker()) pool.workers++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  pool.fn = fn;
  pool.ctx = ctx;
  __atomic_store_n(&pool.finished, n, __ATOMIC_RELAXED);
  const uint64_t region = region_of(__atomic_load_n(&pool.word, __ATOMIC_RELAXED)) + 1;
  __atomic_store_n(&pool.word, region << 32 | (uint64_t)n << 16, __ATOMIC_RELEASE);
  pthread_mutex_lock(&pool.m);
  for (int w = 0; w < want && w < pool.workers; w++)
    if (pool.asleep[w]) pthread_cond_signal(&pool.wake[w]);
  pthread_mutex_unlock(&pool.m);
  const int mine = run_claimed(region);
  const int left = mine > 0 ? __atomic_sub_fetch(&pool.finished, mine, __ATOMIC_ACQ_REL)
                            : __atomic_load_n(&pool.finished, __ATOMIC_ACQUIRE);
  if (left > 0) { /* workers' tasks still running: poll, then sleep */
    const uint64_t start = now_ns();
    for (unsigned i = 1; __atomic_load_n(&pool.finished, __ATOMIC_ACQUIRE) > 0; i++) {
      if (i % 64 == 0 && now_ns() - start > SPIN_NS) {
        pthread_mutex_lock(&pool.m);
        while (__atomic_load_n(&pool.finished, __ATOMIC_ACQUIRE) > 0) pthread_cond_wait(&pool.done, &pool.m);
        pthread_mutex_unlock(&pool.m);
        break;
      }
      relax();
    }
  }
  pthread_mutex_unlock(&pool.busy);
}
