// Syscalls Node does not expose: device nodes (overlay whiteouts are char 0/0), l*xattr (never
// follow a symlink), nanosecond utimensat without following, mount/umount with relative lowerdirs,
// statfs magic, flock, chroot. Every function is synchronous and throws an Error carrying errno's code,
// except createNodes, readFiles (batches of small files) and sha256Update, which work on a libuv worker
// thread and return a promise.
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <openssl/evp.h>
#include "read-ring.h"

#define MAXARGS 8
#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "napi call failed"); return NULL; } } while (0)

static const char *errno_code(int e) {
  switch (e) {
    case ENOENT: return "ENOENT"; case EEXIST: return "EEXIST"; case EPERM: return "EPERM";
    case EACCES: return "EACCES"; case ENOTDIR: return "ENOTDIR"; case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL"; case ENOSPC: return "ENOSPC"; case ENODATA: return "ENODATA";
    case EOPNOTSUPP: return "ENOTSUP"; case EBUSY: return "EBUSY"; case ELOOP: return "ELOOP";
    case EWOULDBLOCK: return "EAGAIN"; case ENAMETOOLONG: return "ENAMETOOLONG"; case E2BIG: return "E2BIG";
    case ERANGE: return "ERANGE"; case EROFS: return "EROFS"; case EXDEV: return "EXDEV";
    case ENODEV: return "ENODEV"; case ENOTEMPTY: return "ENOTEMPTY"; case EBADF: return "EBADF";
    default: return "EIO";
  }
}

static napi_value errno_error(napi_env env, int e, const char *syscall, const char *path) {
  char msg[4200];
  snprintf(msg, sizeof msg, "%s: %s, %s '%s'", errno_code(e), strerror(e), syscall, path ? path : "");
  napi_value m, code, err, no, sc;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_string_utf8(env, errno_code(e), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, m, &err);
  napi_create_int32(env, -e, &no);
  napi_set_named_property(env, err, "errno", no);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, err, "syscall", sc);
  if (path) {
    napi_value p;
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &p);
    napi_set_named_property(env, err, "path", p);
  }
  return err;
}

static napi_value throw_errno(napi_env env, int e, const char *syscall, const char *path) {
  napi_throw(env, errno_error(env, e, syscall, path));
  return NULL;
}

// Strings are copied into malloc'd buffers the caller frees; NULL stays NULL for JS null/undefined.
static char *get_str(napi_env env, napi_value v) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_string) return NULL;
  size_t len;
  napi_get_value_string_utf8(env, v, NULL, 0, &len);
  char *s = malloc(len + 1);
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

static double get_num(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d;
}

static napi_value undef(napi_env env) { napi_value u; napi_get_undefined(env, &u); return u; }

// mknod(path, mode, major, minor)
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  size_t argc = 4; napi_value a[4];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  char *path = get_str(env, a[0]);
  if (!path) { napi_throw_type_error(env, NULL, "path must be a string"); return NULL; }
  mode_t mode = (mode_t)get_num(env, a[1]);
  dev_t dev = makedev((unsigned)get_num(env, a[2]), (unsigned)get_num(env, a[3]));
  if (mknod(path, mode, dev) != 0) { int e = errno; napi_value r = throw_errno(env, e, "mknod", path); free(path); return r; }
  free(path);
  return undef(env);
}

// lsetxattr(path, name, buffer)
static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value a[3];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  char *path = get_str(env, a[0]), *name = get_str(env, a[1]);
  void *data; size_t len;
  if (!path || !name || napi_get_buffer_info(env, a[2], &data, &len) != napi_ok) {
    free(path); free(name); napi_throw_type_error(env, NULL, "lsetxattr(path, name, buffer)"); return NULL;
  }
  napi_value r = undef(env);
  if (lsetxattr(path, name, data, len, 0) != 0) r = throw_errno(env, errno, "lsetxattr", path);
  free(path); free(name);
  return r;
}

// lgetxattr(path, name) -> Buffer | null (null when the attribute is absent)
static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value a[2];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  char *path = get_str(env, a[0]), *name = get_str(env, a[1]);
  if (!path || !name) { free(path); free(name); napi_throw_type_error(env, NULL, "lgetxattr(path, name)"); return NULL; }
  napi_value r = NULL;
  for (;;) {
    ssize_t n = lgetxattr(path, name, NULL, 0);
    if (n < 0) {
      if (errno == ENODATA || errno == ENOTSUP) napi_get_null(env, &r);
      else r = throw_errno(env, errno, "lgetxattr", path);
      break;
    }
    char *buf = malloc(n ? n : 1);
    ssize_t m = lgetxattr(path, name, buf, n);
    if (m < 0 && errno == ERANGE) { free(buf); continue; }
    if (m < 0) { free(buf); r = throw_errno(env, errno, "lgetxattr", path); break; }
    void *out;
    napi_create_buffer_copy(env, m, buf, &out, &r);
    free(buf);
    break;
  }
  free(path); free(name);
  return r;
}

// llistxattr(path) -> string[]
static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  char *path = get_str(env, a[0]);
  if (!path) { napi_throw_type_error(env, NULL, "llistxattr(path)"); return NULL; }
  napi_value arr = NULL;
  for (;;) {
    ssize_t n = llistxattr(path, NULL, 0);
    if (n < 0) {
      if (errno == ENOTSUP) { napi_create_array(env, &arr); break; }
      arr = throw_errno(env, errno, "llistxattr", path); break;
    }
    char *buf = malloc(n ? n : 1);
    ssize_t m = llistxattr(path, buf, n);
    if (m < 0 && errno == ERANGE) { free(buf); continue; }
    if (m < 0) { free(buf); arr = throw_errno(env, errno, "llistxattr", path); break; }
    napi_create_array(env, &arr);
    uint32_t i = 0;
    for (ssize_t off = 0; off < m; off += strlen(buf + off) + 1) {
      napi_value s;
      napi_create_string_utf8(env, buf + off, NAPI_AUTO_LENGTH, &s);
      napi_set_element(env, arr, i++, s);
    }
    free(buf);
    break;
  }
  free(path);
  return arr;
}

// lremovexattr(path, name); absent attributes are not an error
static napi_value js_lremovexattr(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value a[2];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  char *path = get_str(env, a[0]), *name = get_str(env, a[1]);
  if (!path || !name) { free(path); free(name); napi_throw_type_error(env, NULL, "lremovexattr(path, name)"); return NULL; }
  napi_value r = undef(env);
  if (lremovexattr(path, name) != 0 && errno != ENODATA) r = throw_errno(env, errno, "lremovexattr", path);
  free(path); free(name);
  return r;
}

// lutimes(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec): nanosecond times, never following a symlink
static napi_value js_lutimes(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value a[5];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  char *path = get_str(env, a[0]);
  if (!path) { napi_throw_type_error(env, NULL, "lutimes(path, ...)"); return NULL; }
  struct timespec ts[2];
  ts[0].tv_sec = (time_t)get_num(env, a[1]); ts[0].tv_nsec = (long)get_num(env, a[2]);
  ts[1].tv_sec = (time_t)get_num(env, a[3]); ts[1].tv_nsec = (long)get_num(env, a[4]);
  napi_value r = undef(env);
  if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) != 0) r = throw_errno(env, errno, "utimensat", path);
  free(path);
  return r;
}

struct mount_req { char *dir, *source, *target, *fstype, *data; unsigned long flags; int err; };

// Runs on its own thread so that chdir (needed to pass relative lowerdirs and keep the mount data
// under one page) never moves the cwd of Node's other threads.
static void *mount_thread(void *p) {
  struct mount_req *r = p;
  if (unshare(CLONE_FS) != 0) { r->err = errno; return NULL; }
  if (r->dir && chdir(r->dir) != 0) { r->err = errno; return NULL; }
  if (mount(r->source, r->target, r->fstype, r->flags, r->data) != 0) r->err = errno;
  return NULL;
}

// mount(source, target, fstype, flags, data, cwd?)
static napi_value js_mount(napi_env env, napi_callback_info info) {
  size_t argc = 6; napi_value a[6];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  struct mount_req r = {0};
  r.source = get_str(env, a[0]); r.target = get_str(env, a[1]); r.fstype = get_str(env, a[2]);
  r.flags = (unsigned long)get_num(env, a[3]); r.data = get_str(env, a[4]);
  r.dir = argc > 5 ? get_str(env, a[5]) : NULL;
  napi_value res = undef(env);
  if (!r.target) { napi_throw_type_error(env, NULL, "mount: target must be a string"); res = NULL; }
  else {
    pthread_t t;
    int e = pthread_create(&t, NULL, mount_thread, &r);
    if (e != 0) r.err = e; else pthread_join(t, NULL);
    if (r.err) res = throw_errno(env, r.err, "mount", r.target);
  }
  free(r.source); free(r.target); free(r.fstype); free(r.data); free(r.dir);
  return res;
}

// umount(target, flags)
static napi_value js_umount(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value a[2];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  char *target = get_str(env, a[0]);
  if (!target) { napi_throw_type_error(env, NULL, "umount(target, flags)"); return NULL; }
  napi_value r = undef(env);
  if (umount2(target, argc > 1 ? (int)get_num(env, a[1]) : 0) != 0) r = throw_errno(env, errno, "umount2", target);
  free(target);
  return r;
}

// chroot(path): a relative path resolves against the cwd, which chroot leaves as it was
static napi_value js_chroot(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  char *path = get_str(env, a[0]);
  if (!path) { napi_throw_type_error(env, NULL, "chroot(path)"); return NULL; }
  napi_value r = undef(env);
  if (chroot(path) != 0) r = throw_errno(env, errno, "chroot", path);
  free(path);
  return r;
}

// statfs(path) -> { type, bsize, blocks, bfree, bavail, files, ffree }
static napi_value js_statfs(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  char *path = get_str(env, a[0]);
  if (!path) { napi_throw_type_error(env, NULL, "statfs(path)"); return NULL; }
  struct statfs s;
  if (statfs(path, &s) != 0) { napi_value r = throw_errno(env, errno, "statfs", path); free(path); return r; }
  free(path);
  napi_value o, v;
  napi_create_object(env, &o);
#define SET(k, x) napi_create_double(env, (double)(x), &v); napi_set_named_property(env, o, k, v);
  SET("type", (unsigned long)s.f_type); SET("bsize", s.f_bsize); SET("blocks", s.f_blocks);
  SET("bfree", s.f_bfree); SET("bavail", s.f_bavail); SET("files", s.f_files); SET("ffree", s.f_ffree);
#undef SET
  return o;
}

// flock(fd, operation) -> true when taken; false when LOCK_NB was given and the lock is held elsewhere
static napi_value js_flock(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value a[2];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  int fd = (int)get_num(env, a[0]), op = (int)get_num(env, a[1]);
  napi_value r;
  if (flock(fd, op) != 0) {
    if (errno == EWOULDBLOCK && (op & LOCK_NB)) { napi_get_boolean(env, false, &r); return r; }
    return throw_errno(env, errno, "flock", NULL);
  }
  napi_get_boolean(env, true, &r);
  return r;
}

// startWriteback(fd, offset, length): start writing the range's dirty pages to disk and return (sync_file_range
// SYNC_FILE_RANGE_WRITE), so that a later fsync of a large file finds little left to write
static napi_value js_start_writeback(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value a[3];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  int fd = (int)get_num(env, a[0]);
  if (sync_file_range(fd, (off64_t)get_num(env, a[1]), (off64_t)get_num(env, a[2]), SYNC_FILE_RANGE_WRITE) != 0) return throw_errno(env, errno, "sync_file_range", NULL);
  return undef(env);
}

// --- createNodes / readFiles: a batch of small files (and, for createNodes, the directories and symlinks among
// them) handled on a libuv worker thread, one threadpool hop per batch instead of several syscalls on the main
// thread per node. Layer tars are mostly small files and directories: creating (or reading) them off the main
// thread overlaps it with decompression and tar work.

#define META_FIELDS 8 // createNodes: kind, mode, uid, gid, atime sec, atime nsec, mtime sec, mtime nsec
enum { NODE_FILE = 0, NODE_DIRECTORY = 1, NODE_SYMLINK = 2 };

typedef struct file_batch file_batch;
typedef int (*file_op)(file_batch *b, size_t i);
typedef void (*batch_run)(file_batch *b);

struct file_batch {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep; // the bodies array: keeps every Buffer alive while the worker uses it
  batch_run run;
  size_t n, done;
  char **paths;
  uint8_t **data;
  size_t *len;
  double *meta; // createNodes only
  int err;
  const char *syscall;
};

#define FAIL(name) do { b->syscall = name; return errno; } while (0)

// Owner, then mode (chown clears setuid, so the mode again after any chown), each only where `st` (the node as
// it is) differs: fstat is cheaper than chown and chmod, which each rewrite the inode, and most nodes need neither.
// fd < 0: by path, which names what this batch has just made (no symlink is followed: mode is not set on one).
static int own(file_batch *b, int fd, const char *path, const struct stat *st, const double *m, int set_mode) {
  const mode_t mode = (mode_t)m[1] & 07777;
  const uid_t uid = (uid_t)m[2];
  const gid_t gid = (gid_t)m[3];
  const int chown_needed = st->st_uid != uid || st->st_gid != gid;
  if (chown_needed && (fd >= 0 ? fchown(fd, uid, gid) : lchown(path, uid, gid)) != 0) FAIL("chown");
  if (set_mode && (chown_needed || (st->st_mode & 07777) != mode) && (fd >= 0 ? fchmod(fd, mode) : chmod(path, mode)) != 0) FAIL("chmod");
  return 0;
}

// A new regular file: open O_EXCL; something other than a directory in the way is replaced, a directory is left
// to the caller (EEXIST). Created with the permission bits it is to have, then filled, owned and timed.
static int make_file(file_batch *b, size_t i, const double *m) {
  const char *path = b->paths[i];
  const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  int fd = open(path, flags, (mode_t)m[1] & 0777);
  if (fd < 0 && errno == EEXIST) {
    struct stat st;
    if (lstat(path, &st) != 0) FAIL("lstat");
    if (S_ISDIR(st.st_mode)) { b->syscall = "open"; return EEXIST; }
    if (unlink(path) != 0) FAIL("unlink");
    fd = open(path, flags, (mode_t)m[1] & 0777);
  }
  if (fd < 0) FAIL("open");
  int e = 0;
  for (size_t off = 0; off < b->len[i];) {
    ssize_t w = write(fd, b->data[i] + off, b->len[i] - off);
    if (w < 0) { if (errno == EINTR) continue; e = errno; b->syscall = "write"; break; }
    off += (size_t)w;
  }
  struct stat st;
  if (!e && fstat(fd, &st) != 0) { e = errno; b->syscall = "fstat"; }
  if (!e) e = own(b, fd, path, &st, m, 1);
  struct timespec ts[2] = {{(time_t)m[4], (long)m[5]}, {(time_t)m[6], (long)m[7]}};
  if (!e && futimens(fd, ts) != 0) { e = errno; b->syscall = "futimens"; }
  if (close(fd) != 0 && !e) { e = errno; b->syscall = "close"; }
  return e;
}

// A directory: one already there is kept (it takes the entry's owner and mode), anything else in the way is
// replaced. Its times are the caller's to set, once nothing is written into it any more.
static int make_directory(file_batch *b, size_t i, const double *m) {
  const char *path = b->paths[i];
  struct stat st;
  if (mkdir(path, (mode_t)m[1] & 0777) != 0) {
    if (errno != EEXIST) FAIL("mkdir");
    if (lstat(path, &st) != 0) FAIL("lstat");
    if (!S_ISDIR(st.st_mode)) {
      if (unlink(path) != 0) FAIL("unlink");
      if (mkdir(path, (mode_t)m[1] & 0777) != 0) FAIL("mkdir");
    }
  }
  if (lstat(path, &st) != 0) FAIL("lstat");
  return own(b, -1, path, &st, m, 1);
}

// A symlink to the body's bytes: a non-directory in the way is replaced, a directory is left to the caller (EEXIST).
static int make_symlink(file_batch *b, size_t i, const double *m) {
  const char *path = b->paths[i];
  char *target = malloc(b->len[i] + 1);
  if (!target) { b->syscall = "malloc"; return ENOMEM; }
  memcpy(target, b->data[i], b->len[i]);
  target[b->len[i]] = 0;
  int r = symlink(target, path);
  if (r != 0 && errno == EEXIST) {
    struct stat st;
    if (lstat(path, &st) != 0) { free(target); FAIL("lstat"); }
    if (S_ISDIR(st.st_mode)) { free(target); b->syscall = "symlink"; return EEXIST; }
    if (unlink(path) != 0) { free(target); FAIL("unlink"); }
    r = symlink(target, path);
  }
  free(target);
  if (r != 0) FAIL("symlink");
  struct stat st;
  if (lstat(path, &st) != 0) FAIL("lstat");
  int e = own(b, -1, path, &st, m, 0);
  struct timespec ts[2] = {{(time_t)m[4], (long)m[5]}, {(time_t)m[6], (long)m[7]}};
  if (!e && utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) != 0) FAIL("utimensat");
  return e;
}

static int create_one(file_batch *b, size_t i) {
  const double *m = b->meta + i * META_FIELDS;
  switch ((int)m[0]) {
    case NODE_FILE: return make_file(b, i, m);
    case NODE_DIRECTORY: return make_directory(b, i, m);
    case NODE_SYMLINK: return make_symlink(b, i, m);
    default: b->syscall = "createNodes"; return EINVAL;
  }
}

// Exactly the body's length from the start of the file, never through a symlink; a file that ends before
// that answers ENODATA (it shrank since it was measured).
static int read_one(file_batch *b, size_t i) {
  int fd = open_for_read(b->paths[i]);
  if (fd < 0) { b->syscall = "open"; return errno; }
  int e = read_rest(fd, b->data[i], b->len[i], 0, &b->syscall);
  close(fd);
  return e;
}

static void each(file_batch *b, file_op op) {
  for (b->done = 0; b->done < b->n; b->done++) {
    b->err = op(b, b->done);
    if (b->err) return;
  }
}

static void create_all(file_batch *b) { each(b, create_one); }

static void read_all(file_batch *b) {
  int e = ring_read_files(b->paths, b->data, b->len, b->n, &b->done, &b->syscall);
  if (e < 0) each(b, read_one);
  else b->err = e;
}

static void batch_execute(napi_env env, void *data) {
  (void)env;
  file_batch *b = data;
  b->run(b);
}

static void batch_free(file_batch *b) {
  for (size_t i = 0; i < b->n; i++) free(b->paths[i]);
  free(b->paths); free(b->data); free(b->len); free(b->meta); free(b);
}

static void batch_complete(napi_env env, napi_status status, void *data) {
  file_batch *b = data;
  if (status != napi_ok && !b->err) { b->err = EIO; b->syscall = "fileBatch"; }
  if (b->err) {
    napi_value err = errno_error(env, b->err, b->syscall, b->paths[b->done]), idx;
    napi_create_double(env, (double)b->done, &idx);
    napi_set_named_property(env, err, "index", idx);
    napi_reject_deferred(env, b->deferred, err);
  } else {
    napi_resolve_deferred(env, b->deferred, undef(env));
  }
  napi_delete_reference(env, b->keep);
  napi_delete_async_work(env, b->work);
  batch_free(b);
}

// Queue `execute` on the libuv thread pool; `complete` (on the event loop) settles the returned promise through
// *deferred and deletes *work.
static napi_value queue_work(napi_env env, const char *what, napi_async_execute_callback execute, napi_async_complete_callback complete,
                             void *data, napi_deferred *deferred, napi_async_work *work) {
  napi_value promise, name;
  CHECK(napi_create_promise(env, deferred, &promise));
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &name);
  CHECK(napi_create_async_work(env, NULL, name, execute, complete, data, work));
  CHECK(napi_queue_async_work(env, *work));
  return promise;
}

// The n Buffers of a JS array as (data, len) pairs in two arrays allocated here (the caller frees them, also on
// failure), valid while the JS array is referenced; 0 if an element is not a Buffer.
static int get_buffers(napi_env env, napi_value arr, uint32_t n, uint8_t ***data, size_t **len) {
  *data = calloc(n ? n : 1, sizeof **data);
  *len = calloc(n ? n : 1, sizeof **len);
  for (uint32_t i = 0; i < n; i++) {
    napi_value v; void *d = NULL;
    if (napi_get_element(env, arr, i, &v) != napi_ok || napi_get_buffer_info(env, v, &d, &(*len)[i]) != napi_ok) return 0;
    (*data)[i] = d;
  }
  return 1;
}

// The batch of (paths[i], bodies[i]) queued on the threadpool; a failure rejects with an errno Error whose
// `index` is the file that failed (the files after it were not touched).
static napi_value queue_batch(napi_env env, const char *what, napi_value paths, napi_value bodies, batch_run run, const double *meta) {
  uint32_t n = 0, nb = 0;
  if (napi_get_array_length(env, paths, &n) != napi_ok || napi_get_array_length(env, bodies, &nb) != napi_ok || n != nb) {
    napi_throw_type_error(env, NULL, "paths and bodies must be arrays of one length");
    return NULL;
  }
  file_batch *b = calloc(1, sizeof *b);
  b->run = run;
  b->paths = calloc(n ? n : 1, sizeof *b->paths);
  if (meta) {
    b->meta = malloc((n ? n : 1) * META_FIELDS * sizeof(double));
    memcpy(b->meta, meta, (size_t)n * META_FIELDS * sizeof(double));
  }
  for (uint32_t i = 0; i < n && b->n == i; i++) {
    napi_value p;
    napi_get_element(env, paths, i, &p);
    if ((b->paths[i] = get_str(env, p)) != NULL) b->n++;
  }
  if (!get_buffers(env, bodies, n, &b->data, &b->len) || b->n != n) {
    batch_free(b);
    napi_throw_type_error(env, NULL, "paths must be strings and bodies Buffers");
    return NULL;
  }
  CHECK(napi_create_reference(env, bodies, 1, &b->keep));
  return queue_work(env, what, batch_execute, batch_complete, b, &b->deferred, &b->work);
}

// createNodes(paths: string[], bodies: Buffer[], meta: Float64Array) -> Promise<void>
static napi_value js_create_nodes(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value a[3];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  napi_typedarray_type tt; size_t mlen = 0; void *mdata = NULL; uint32_t n = 0;
  if (argc < 3 || napi_get_array_length(env, a[0], &n) != napi_ok || napi_get_typedarray_info(env, a[2], &tt, &mlen, &mdata, NULL, NULL) != napi_ok ||
      tt != napi_float64_array || mlen != (size_t)n * META_FIELDS) {
    napi_throw_type_error(env, NULL, "createNodes(paths, bodies, meta): meta must be a Float64Array of 8 numbers per node");
    return NULL;
  }
  return queue_batch(env, "strata.createNodes", a[0], a[1], create_all, mdata);
}

// readFiles(paths: string[], bodies: Buffer[]) -> Promise<void>: fills each body from the start of its file
static napi_value js_read_files(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value a[2];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 2) { napi_throw_type_error(env, NULL, "readFiles(paths, bodies)"); return NULL; }
  return queue_batch(env, "strata.readFiles", a[0], a[1], read_all, NULL);
}

// --- scanDir: one directory's entries with their lstat, xattrs and symlink targets, read on a worker thread.
// Exporting a layer walks its tree: an lstat and an llistxattr per entry on the main thread cost more there
// (syscalls are dear in this VM) than one threadpool hop per directory.

#define SCAN_FIELDS 8 // mode, uid, gid, size, nlink, rdev, mtime sec, mtime nsec

typedef struct {
  char *name;
  struct stat st;
  char *xlist; ssize_t xlist_len; // the names, NUL-separated
  char **xval; ssize_t *xlen;     // per name; xlen < 0: gone since it was listed
  char *link;
} scan_entry;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *dir;
  scan_entry *e;
  size_t n;
  int err;
  const char *syscall;
  char *errpath;
} scan_req;

// A value of the size the kernel reports, asked again while it grows (ERANGE); NULL with *len < 0 on error.
static char *read_sized(ssize_t (*get)(const char *, const char *, void *, size_t), const char *path, const char *name, ssize_t *len) {
  for (;;) {
    ssize_t n = get(path, name, NULL, 0);
    if (n < 0) { *len = -1; return NULL; }
    char *buf = malloc(n ? n : 1);
    ssize_t m = get(path, name, buf, n);
    if (m >= 0) { *len = m; return buf; }
    free(buf);
    if (errno != ERANGE) { *len = -1; return NULL; }
  }
}

static ssize_t list_xattrs(const char *path, const char *unused, void *buf, size_t size) { (void)unused; return llistxattr(path, buf, size); }

static int scan_one(scan_req *r, scan_entry *e, char *path) {
  if (lstat(path, &e->st) != 0) { r->syscall = "lstat"; return errno; }
  e->xlist = read_sized(list_xattrs, path, NULL, &e->xlist_len);
  if (e->xlist_len < 0) {
    if (errno != ENOTSUP) { r->syscall = "llistxattr"; return errno; }
    e->xlist_len = 0;
  }
  int nx = 0;
  for (ssize_t off = 0; off < e->xlist_len; off += strlen(e->xlist + off) + 1) nx++;
  if (nx > 0) {
    e->xval = calloc(nx, sizeof *e->xval);
    e->xlen = calloc(nx, sizeof *e->xlen);
    int i = 0;
    for (ssize_t off = 0; off < e->xlist_len; off += strlen(e->xlist + off) + 1, i++) {
      e->xval[i] = read_sized(lgetxattr, path, e->xlist + off, &e->xlen[i]);
      if (e->xlen[i] < 0 && errno != ENODATA) { r->syscall = "lgetxattr"; return errno; }
    }
  }
  if (S_ISLNK(e->st.st_mode)) {
    size_t cap = (size_t)e->st.st_size + 1;
    for (;;) {
      e->link = malloc(cap);
      ssize_t m = readlink(path, e->link, cap);
      if (m < 0) { r->syscall = "readlink"; return errno; }
      if ((size_t)m < cap) { e->link[m] = 0; break; }
      free(e->link); e->link = NULL; cap *= 2;
    }
  }
  return 0;
}

static void scan_execute(napi_env env, void *data) {
  (void)env;
  scan_req *r = data;
  DIR *d = opendir(r->dir);
  if (!d) { r->err = errno; r->syscall = "opendir"; r->errpath = strdup(r->dir); return; }
  size_t cap = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    if (r->n == cap) { cap = cap ? cap * 2 : 64; r->e = realloc(r->e, cap * sizeof *r->e); }
    memset(&r->e[r->n], 0, sizeof *r->e);
    r->e[r->n++].name = strdup(de->d_name);
  }
  closedir(d);
  size_t dlen = strlen(r->dir);
  char *path = malloc(dlen + 258);
  memcpy(path, r->dir, dlen);
  path[dlen] = '/';
  for (size_t i = 0; i < r->n; i++) {
    strcpy(path + dlen + 1, r->e[i].name);
    if ((r->err = scan_one(r, &r->e[i], path)) != 0) { r->errpath = strdup(path); break; }
  }
  free(path);
}

static void scan_free(scan_req *r) {
  for (size_t i = 0; i < r->n; i++) {
    scan_entry *e = &r->e[i];
    int nx = 0;
    if (e->xval)
      for (ssize_t off = 0; off < e->xlist_len; off += strlen(e->xlist + off) + 1) free(e->xval[nx++]);
    free(e->name); free(e->xlist); free(e->xval); free(e->xlen); free(e->link);
  }
  free(r->e); free(r->dir); free(r->errpath); free(r);
}

static void scan_complete(napi_env env, napi_status status, void *data) {
  scan_req *r = data;
  if (status != napi_ok && !r->err) { r->err = EIO; r->syscall = "scanDir"; }
  if (r->err) {
    napi_reject_deferred(env, r->deferred, errno_error(env, r->err, r->syscall, r->errpath ? r->errpath : r->dir));
  } else {
    napi_value out, names, xattrs, links, stats_ab, stats, ids_ab, ids, v;
    double *sf; uint64_t *idf;
    napi_create_object(env, &out);
    napi_create_array_with_length(env, r->n, &names);
    napi_create_array_with_length(env, r->n, &xattrs);
    napi_create_array_with_length(env, r->n, &links);
    napi_create_arraybuffer(env, r->n * SCAN_FIELDS * sizeof(double), (void **)&sf, &stats_ab);
    napi_create_typedarray(env, napi_float64_array, r->n * SCAN_FIELDS, stats_ab, 0, &stats);
    napi_create_arraybuffer(env, r->n * 2 * sizeof(uint64_t), (void **)&idf, &ids_ab);
    napi_create_typedarray(env, napi_biguint64_array, r->n * 2, ids_ab, 0, &ids);
    napi_value null;
    napi_get_null(env, &null);
    for (size_t i = 0; i < r->n; i++) {
      scan_entry *e = &r->e[i];
      napi_create_string_utf8(env, e->name, NAPI_AUTO_LENGTH, &v);
      napi_set_element(env, names, i, v);
      double *f = sf + i * SCAN_FIELDS;
      f[0] = e->st.st_mode; f[1] = e->st.st_uid; f[2] = e->st.st_gid; f[3] = (double)e->st.st_size;
      f[4] = (double)e->st.st_nlink; f[5] = (double)e->st.st_rdev; f[6] = (double)e->st.st_mtim.tv_sec; f[7] = (double)e->st.st_mtim.tv_nsec;
      idf[2 * i] = e->st.st_dev; idf[2 * i + 1] = e->st.st_ino;
      napi_value xs = null;
      if (e->xlist_len > 0) {
        napi_create_array(env, &xs);
        uint32_t k = 0; int j = 0;
        for (ssize_t off = 0; off < e->xlist_len; off += strlen(e->xlist + off) + 1, j++) {
          if (e->xlen[j] < 0) continue;
          napi_value pair, name, val;
          napi_create_array_with_length(env, 2, &pair);
          napi_create_string_utf8(env, e->xlist + off, NAPI_AUTO_LENGTH, &name);
          napi_create_buffer_copy(env, (size_t)e->xlen[j], e->xval[j] ? e->xval[j] : "", NULL, &val);
          napi_set_element(env, pair, 0, name);
          napi_set_element(env, pair, 1, val);
          napi_set_element(env, xs, k++, pair);
        }
      }
      napi_set_element(env, xattrs, i, xs);
      napi_value l = null;
      if (e->link) napi_create_string_utf8(env, e->link, NAPI_AUTO_LENGTH, &l);
      napi_set_element(env, links, i, l);
    }
    napi_set_named_property(env, out, "names", names);
    napi_set_named_property(env, out, "stats", stats);
    napi_set_named_property(env, out, "ids", ids);
    napi_set_named_property(env, out, "xattrs", xattrs);
    napi_set_named_property(env, out, "links", links);
    napi_resolve_deferred(env, r->deferred, out);
  }
  napi_delete_async_work(env, r->work);
  scan_free(r);
}

// scanDir(path) -> Promise<DirScan>
static napi_value js_scan_dir(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  char *dir = argc >= 1 ? get_str(env, a[0]) : NULL;
  if (!dir) { napi_throw_type_error(env, NULL, "scanDir(path)"); return NULL; }
  scan_req *r = calloc(1, sizeof *r);
  r->dir = dir;
  return queue_work(env, "strata.scanDir", scan_execute, scan_complete, r, &r->deferred, &r->work);
}

// --- sha256: a running SHA-256 whose updates run on the thread pool. Node's crypto hashes on the event loop,
// where a pull's two hashes of every byte (compressed and uncompressed) held it for ~0.2 s. OpenSSL is Node's own
// (its symbols are exported to addons). The caller keeps one update in flight per hash and the bytes unchanged.

static void sha256_free(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  EVP_MD_CTX_free((EVP_MD_CTX *)data);
}

// sha256New() -> an opaque handle
static napi_value js_sha256_new(napi_env env, napi_callback_info info) {
  (void)info;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(ctx);
    napi_throw_error(env, NULL, "sha256: cannot initialise OpenSSL's digest");
    return NULL;
  }
  napi_value h;
  CHECK(napi_create_external(env, ctx, sha256_free, NULL, &h));
  return h;
}

static EVP_MD_CTX *sha256_ctx(napi_env env, napi_value h) {
  void *ctx = NULL;
  napi_valuetype t;
  if (napi_typeof(env, h, &t) != napi_ok || t != napi_external || napi_get_value_external(env, h, &ctx) != napi_ok) return NULL;
  return ctx;
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep[2]; // the handle and the chunks array, alive until the work completes
  EVP_MD_CTX *ctx;
  size_t n;
  uint8_t **data;
  size_t *len;
  int ok;
} sha256_job;

static void sha256_execute(napi_env env, void *data) {
  (void)env;
  sha256_job *j = data;
  j->ok = 1;
  for (size_t i = 0; i < j->n && j->ok; i++) j->ok = EVP_DigestUpdate(j->ctx, j->data[i], j->len[i]) == 1;
}

static void sha256_complete(napi_env env, napi_status status, void *data) {
  sha256_job *j = data;
  if (status == napi_ok && j->ok) napi_resolve_deferred(env, j->deferred, undef(env));
  else {
    napi_value m, err;
    napi_create_string_utf8(env, "sha256: update failed", NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &err);
    napi_reject_deferred(env, j->deferred, err);
  }
  napi_delete_reference(env, j->keep[0]);
  napi_delete_reference(env, j->keep[1]);
  napi_delete_async_work(env, j->work);
  free(j->data);
  free(j->len);
  free(j);
}

// sha256Update(handle, chunks: Buffer[]) -> Promise<void>: the chunks hashed in order on the thread pool
static napi_value js_sha256_update(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value a[2];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  EVP_MD_CTX *ctx = argc < 2 ? NULL : sha256_ctx(env, a[0]);
  uint32_t n = 0;
  if (!ctx || napi_get_array_length(env, a[1], &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "sha256Update(handle, chunks: Buffer[])");
    return NULL;
  }
  sha256_job *j = calloc(1, sizeof *j);
  j->ctx = ctx;
  if (!get_buffers(env, a[1], n, &j->data, &j->len)) {
    free(j->data); free(j->len); free(j);
    napi_throw_type_error(env, NULL, "sha256Update: chunks must be Buffers");
    return NULL;
  }
  j->n = n;
  CHECK(napi_create_reference(env, a[0], 1, &j->keep[0]));
  CHECK(napi_create_reference(env, a[1], 1, &j->keep[1]));
  return queue_work(env, "strata.sha256", sha256_execute, sha256_complete, j, &j->deferred, &j->work);
}

// sha256Digest(handle) -> lowercase hex; the handle is spent
static napi_value js_sha256_digest(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  EVP_MD_CTX *ctx = argc < 1 ? NULL : sha256_ctx(env, a[0]);
  unsigned char md[EVP_MAX_MD_SIZE]; unsigned int len = 0;
  if (!ctx || EVP_DigestFinal_ex(ctx, md, &len) != 1) {
    napi_throw_error(env, NULL, "sha256Digest: not a live sha256 handle");
    return NULL;
  }
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  for (unsigned int i = 0; i < len; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  napi_value out;
  CHECK(napi_create_string_utf8(env, hex, 2 * len, &out));
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
    {"mknod", NULL, js_mknod, NULL, NULL, NULL, napi_default, NULL},
    {"lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_default, NULL},
    {"lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_default, NULL},
    {"llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_default, NULL},
    {"lremovexattr", NULL, js_lremovexattr, NULL, NULL, NULL, napi_default, NULL},
    {"lutimes", NULL, js_lutimes, NULL, NULL, NULL, napi_default, NULL},
    {"mount", NULL, js_mount, NULL, NULL, NULL, napi_default, NULL},
    {"umount", NULL, js_umount, NULL, NULL, NULL, napi_default, NULL},
    {"statfs", NULL, js_statfs, NULL, NULL, NULL, napi_default, NULL},
    {"chroot", NULL, js_chroot, NULL, NULL, NULL, napi_default, NULL},
    {"flock", NULL, js_flock, NULL, NULL, NULL, napi_default, NULL},
    {"startWriteback", NULL, js_start_writeback, NULL, NULL, NULL, napi_default, NULL},
    {"createNodes", NULL, js_create_nodes, NULL, NULL, NULL, napi_default, NULL},
    {"readFiles", NULL, js_read_files, NULL, NULL, NULL, napi_default, NULL},
    {"scanDir", NULL, js_scan_dir, NULL, NULL, NULL, napi_default, NULL},
    {"sha256New", NULL, js_sha256_new, NULL, NULL, NULL, napi_default, NULL},
    {"sha256Update", NULL, js_sha256_update, NULL, NULL, NULL, napi_default, NULL},
    {"sha256Digest", NULL, js_sha256_digest, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
