// Batches of small files read through io_uring (read-ring.c).
#pragma once
#include <stddef.h>
#include <stdint.h>

// A file opened to be read: never through a symlink, without updating its access time where allowed.
int open_for_read(const char *path);

// Reads data[off..len) of fd from offset off; a file that ends first answers ENODATA (it shrank since it was measured).
int read_rest(int fd, uint8_t *data, size_t len, size_t off, const char **syscall);

// Fills data[i] with the first len[i] bytes of paths[i] for every i < n, the reads of up to 64 files in flight
// together. 0 when all were read; else the errno of the first file (in path order) that failed, its index in
// *failed and the call in *syscall; -1 if this thread has no io_uring (nothing was read).
int ring_read_files(char *const *paths, uint8_t *const *data, const size_t *len, size_t n, size_t *failed, const char **syscall);
