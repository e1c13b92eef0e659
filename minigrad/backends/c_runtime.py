"""The threads of the compiled CPU path: a small pool, in C, that splits a kernel's outer loop.

    mg_parallel(body, args, n, chunks)
                                  runs body(args, start, end) over [0, n) in `chunks` chunks,
                                  which the caller and the pool take as they come, and returns
                                  when all are done

The chunks are the kernel's, not the pool's: each thread count (--threads 1 too) cuts the loop
at the same places, so which elements take the vectorized path and which the scalar remainder
(exp and erf differ in the last bits between the two) never depends on the threads, and results
are the same bits with any thread count.

Why not OpenMP: BLAS (numpy's matmul) has threads of its own, and the two pools take turns on the
same cores.  An idle OpenMP thread spins for a long while before it sleeps, and so took the core a
BLAS thread was waiting for: the laptop recipe's step ran 15x slower.  OpenMP's knob for that
(OMP_WAIT_POLICY) is read once per process, and the copy of OpenMP that PyTorch or another
library loaded first decides it for everyone.  This pool's idle threads call sched_yield while
they wait for the next kernel (so a BLAS thread that needs the core gets it), and sleep after
SPIN_US microseconds of that.  `mg_set_threads` sets how many threads work (--threads).
"""

SPIN_US = 10

SOURCE = r"""
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#define MAX_THREADS 256
typedef void (*mg_body)(void*, long, long);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t one_job = PTHREAD_MUTEX_INITIALIZER;   /* callers from two Python threads take turns */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static atomic_long generation;      /* the current job's number */
/* The ticket says all a worker needs to decide whether it may take a chunk, in one atomic word:
   (job number mod 2^24) << 40 | chunks << 20 | the next chunk to take.  Only after taking one does a
   worker read the job's other fields: they cannot change then, as the job cannot end (nor the next
   begin) before that chunk is done. */
static atomic_long ticket;
static atomic_long done;            /* chunks finished */
static atomic_int threads = 1;      /* threads that work: the caller and workers 1 .. threads-1 */
static int workers = 0;             /* workers started (more than `threads` - 1 after --threads fell) */
static mg_body job_body;
static void* job_args;
static long job_n;

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

/* Take chunks of job `job` until none is left.  A thread that comes late (the job finished, or
   another began) takes nothing: the ticket names the job it belongs to. */
static void take_chunks(long job) {
  for (;;) {
    long t = atomic_load(&ticket);
    long chunks = (t >> 20) & 0xFFFFF, c = t & 0xFFFFF;
    if ((t >> 40) != (job & 0xFFFFFF) || c >= chunks) return;
    if (!atomic_compare_exchange_weak(&ticket, &t, t + 1)) continue;
    long size = (job_n + chunks - 1) / chunks;
    long start = c * size, end = start + size < job_n ? start + size : job_n;
    if (start < end) job_body(job_args, start, end);
    atomic_fetch_add(&done, 1);
  }
}

static void* worker(void* arg) {
  long seen = atomic_load(&generation), index = (long)arg;
  for (;;) {
    long g = atomic_load(&generation);
    double since = now_us();
    while (g == seen && now_us() - since < %(spin)d) {       /* a kernel often follows soon */
      sched_yield();
      g = atomic_load(&generation);
    }
    if (g == seen) {                                          /* then sleep until one comes */
      pthread_mutex_lock(&lock);
      while ((g = atomic_load(&generation)) == seen) pthread_cond_wait(&wake, &lock);
      pthread_mutex_unlock(&lock);
    }
    seen = g;
    if (index < atomic_load(&threads)) take_chunks(g);     /* beyond --threads: stay out */
  }
  return 0;
}

/* A forked child has this thread's copy of the pool but none of its workers (and maybe a lock some
   other thread held): it starts over with one thread. */
static void forked_child(void) {
  pthread_mutex_init(&lock, 0);
  pthread_mutex_init(&one_job, 0);
  pthread_cond_init(&wake, 0);
  workers = 0;
  atomic_store(&threads, 1);
}

int mg_set_threads(int n) {
  static int fork_handler = 0;
  if (!fork_handler) { pthread_atfork(0, 0, forked_child); fork_handler = 1; }
  if (n < 1) n = 1;
  if (n > MAX_THREADS) n = MAX_THREADS;
  pthread_mutex_lock(&lock);
  while (workers < n - 1) {
    pthread_t t;
    if (pthread_create(&t, 0, worker, (void*)(long)(workers + 1)) != 0) break;
    pthread_detach(t);
    workers++;
  }
  atomic_store(&threads, workers + 1 < n ? workers + 1 : n);
  pthread_mutex_unlock(&lock);
  return atomic_load(&threads);
}

/* body(args, start, end) over [0, n), in `chunks` chunks that the calling thread and the pool's
   threads take as they come: if a worker is slow to wake (BLAS's threads hold the cores), the
   caller does its share instead of waiting for it.  Returns when every chunk is done. */
void mg_parallel(mg_body body, void* args, long n, long chunks) {
  if (chunks > n) chunks = n;
  if (chunks > 0xFFFFF) chunks = 0xFFFFF;
  long size = chunks > 0 ? (n + chunks - 1) / chunks : n;
  if (atomic_load(&threads) <= 1 || chunks < 2) {
    for (long start = 0; start < n; start += size) body(args, start, start + size < n ? start + size : n);
    return;
  }
  pthread_mutex_lock(&one_job);
  job_body = body; job_args = args; job_n = n;
  atomic_store(&done, 0);
  pthread_mutex_lock(&lock);
  long job = atomic_load(&generation) + 1;
  atomic_store(&ticket, ((job & 0xFFFFFF) << 40) | (chunks << 20));
  atomic_store(&generation, job);
  pthread_cond_broadcast(&wake);
  pthread_mutex_unlock(&lock);
  take_chunks(job);
  while (atomic_load(&done) < chunks) sched_yield();         /* chunks that workers are still running */
  pthread_mutex_unlock(&one_job);
}
""" % {"spin": SPIN_US}

# What every kernel library starts with: a pointer to the pool's mg_parallel, set once the
# library is loaded (so kernel libraries need no link-time tie to the runtime's).
KERNEL_PRELUDE = """typedef void (*mg_body)(void*, long, long);
static void (*mg_parallel)(mg_body, void*, long, long);
void mg_use_runtime(void (*parallel)(mg_body, void*, long, long)) { mg_parallel = parallel; }
"""
