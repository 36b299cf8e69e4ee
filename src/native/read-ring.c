// Reading a batch of small files through one io_uring per worker thread. Read one by one, every file whose pages
// are not cached is a block request of its own, and on a virtual machine each request notifies the device
// (a VM exit): a cold export of 2,000 small files spent half its read time there. Submitted together, the reads
// reach the block layer under one plug and the device is notified once per batch; measured on this VM for 2,000
// cold 1-4 KiB files: 130 ms and 85 ms of CPU one by one, 50 ms and 42 ms through the ring.
#define _GNU_SOURCE
#include "read-ring.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RING_ENTRIES 64

typedef struct {
  int fd;
  unsigned sq_mask, cq_mask;
  unsigned *sq_tail, *sq_array, *cq_head, *cq_tail;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
} ring;

// The calling thread's ring, made at its first batch; NULL where the kernel has none (or refuses it: the
// io_uring_disabled sysctl, a seccomp filter), and then the caller reads file by file.
static __thread ring *thread_ring;
static __thread int thread_ring_failed;

static ring *get_ring(void) {
  if (thread_ring || thread_ring_failed) return thread_ring;
  thread_ring_failed = 1;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  int fd = (int)syscall(__NR_io_uring_setup, RING_ENTRIES, &p);
  if (fd < 0) return NULL;
  size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  size_t sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
  char *sq = mmap(NULL, sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  char *cq = mmap(NULL, cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
  void *sqes = mmap(NULL, sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  ring *r = malloc(sizeof *r);
  if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED || !r) {
    if (sq != MAP_FAILED) munmap(sq, sq_size);
    if (cq != MAP_FAILED) munmap(cq, cq_size);
    if (sqes != MAP_FAILED) munmap(sqes, sqes_size);
    free(r);
    close(fd);
    return NULL;
  }
  r->fd = fd;
  r->sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
  r->cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
  r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  r->sq_array = (unsigned *)(sq + p.sq_off.array);
  r->cq_head = (unsigned *)(cq + p.cq_off.head);
  r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  r->sqes = sqes;
  r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  thread_ring = r;
  thread_ring_failed = 0;
  return r;
}

int open_for_read(const char *path) {
  // O_NOATIME where allowed (owner or CAP_FOWNER): a freshly written file's first read would otherwise rewrite
  // its inode for the access time (relatime), an inode write per exported file.
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  return fd;
}

int read_rest(int fd, uint8_t *data, size_t len, size_t off, const char **syscall) {
  while (off < len) {
    ssize_t r = pread(fd, data + off, len - off, (off_t)off);
    if (r < 0) {
      if (errno == EINTR) continue;
      *syscall = "read";
      return errno;
    }
    if (r == 0) {
      *syscall = "read";
      return ENODATA;
    }
    off += (size_t)r;
  }
  return 0;
}

// Submits the reads of fds[0..n) and waits for those the kernel took; res[k] is each read's result (bytes or
// -errno), 0 for a read it did not take.
static void ring_round(ring *r, const int *fds, uint8_t *const *data, const size_t *len, size_t n, int *res) {
  unsigned tail = *r->sq_tail;
  for (size_t k = 0; k < n; k++) {
    unsigned slot = (tail + (unsigned)k) & r->sq_mask;
    struct io_uring_sqe *s = &r->sqes[slot];
    memset(s, 0, sizeof *s);
    s->opcode = IORING_OP_READ;
    s->fd = fds[k];
    s->addr = (unsigned long)data[k];
    s->len = (unsigned)len[k];
    s->off = 0;
    s->user_data = k;
    r->sq_array[slot] = slot;
    res[k] = 0;
  }
  __atomic_store_n(r->sq_tail, tail + (unsigned)n, __ATOMIC_RELEASE);
  size_t taken = 0, seen = 0;
  int refused = 0;
  while (seen < taken || (!refused && taken < n)) {
    unsigned to_submit = refused ? 0 : (unsigned)(n - taken);
    int got = (int)syscall(__NR_io_uring_enter, r->fd, to_submit, (unsigned)((refused ? taken : n) - seen), IORING_ENTER_GETEVENTS, NULL, 0);
    if (!refused && ((got < 0 && errno != EINTR) || (got == 0 && to_submit > 0))) {
      // Nothing more taken: withdraw the rest from the ring; the reads already in flight are still waited for,
      // as they write into the caller's buffers.
      refused = 1;
      __atomic_store_n(r->sq_tail, tail + (unsigned)taken, __ATOMIC_RELEASE);
    } else if (got > 0 && !refused) {
      taken += (size_t)got;
    }
    unsigned head = *r->cq_head, ctail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    for (; head != ctail; head++, seen++) {
      struct io_uring_cqe *c = &r->cqes[head & r->cq_mask];
      res[c->user_data] = c->res;
    }
    __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
  }
}

int ring_read_files(char *const *paths, uint8_t *const *data, const size_t *len, size_t n, size_t *failed, const char **syscall) {
  ring *r = get_ring();
  if (!r) return -1;
  int fds[RING_ENTRIES], res[RING_ENTRIES];
  for (size_t start = 0; start < n; start += RING_ENTRIES) {
    size_t m = n - start < RING_ENTRIES ? n - start : RING_ENTRIES;
    int err = 0;
    size_t opened = 0;
    for (; opened < m; opened++) {
      if ((fds[opened] = open_for_read(paths[start + opened])) < 0) {
        err = errno;
        *syscall = "open";
        break;
      }
    }
    ring_round(r, fds, data + start, len + start, opened, res);
    // The first failure in path order is the one reported, as if the files had been read one after another.
    for (size_t k = 0; k < opened; k++) {
      // The rest of a short read is read here, and all of a failed one: the plain call retries it (EINTR, EAGAIN,
      // whatever a filesystem may answer the ring only) and says why if it fails too.
      int e = read_rest(fds[k], data[start + k], len[start + k], res[k] > 0 ? (size_t)res[k] : 0, syscall);
      close(fds[k]);
      if (e) {
        for (size_t j = k + 1; j < opened; j++) close(fds[j]);
        *failed = start + k;
        return e;
      }
    }
    if (err) {
      *failed = start + opened;
      return err;
    }
  }
  return 0;
}
