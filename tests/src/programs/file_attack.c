/* file_attack MODE PATH [TEXT]: changes PATH in ways the syscall probes of
 * write, open and close do not see.
 *   uring     open, write TEXT and close, all through io_uring
 *   hold      open for writing, wait 1.5 s, write TEXT, exit without close
 *   mmap      map shared, close, wait 1.5 s, write TEXT through the mapping,
 *             exit without msync or munmap
 *   chmod     chmod 0666 through /proc/self/fd/N of a read-only descriptor
 *   truncate  truncate to 0 through /proc/self/fd/N
 *   uring-create  as uring, creating PATH (O_CREAT) through io_uring
 *   mknod     creates PATH with mknod(S_IFREG), then opens it for writing
 *             (no creating open), writes TEXT
 *   dirfd-chmod  for TEXT seconds, flips the mode of PATH's last component
 *             relative to a descriptor of PATH's directory, whatever the
 *             working directory is (so a name resolved against the working
 *             directory names another file)
 *   clonefiles  a child sharing this process's descriptor table opens PATH
 *             for writing (and is killed for it); this process then writes
 *             TEXT through the descriptor the child left in the table
 * Exit status 0 when the change was made. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct ring {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
};

static int ring_setup(struct ring *r) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    r->fd = syscall(SYS_io_uring_setup, 4, &p);
    if (r->fd < 0) return -1;
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    char *sq = mmap(0, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    char *cq = mmap(0, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
    r->sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || r->sqes == MAP_FAILED) return -1;
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return 0;
}

/* Submits one prepared sqe and returns its result. */
static int ring_run(struct ring *r, struct io_uring_sqe *tmpl) {
    unsigned tail = *r->sq_tail, idx = tail & *r->sq_mask;
    r->sqes[idx] = *tmpl;
    r->sq_array[idx] = idx;
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
    if (syscall(SYS_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) return -1000;
    unsigned head = __atomic_load_n(r->cq_head, __ATOMIC_ACQUIRE);
    if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) return -1001;
    int res = r->cqes[head & *r->cq_mask].res;
    __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
    return res;
}

static int by_uring(const char *path, const char *text, int flags) {
    struct ring r;
    if (ring_setup(&r)) return 10;
    struct io_uring_sqe sqe;
    memset(&sqe, 0, sizeof sqe);
    sqe.opcode = IORING_OP_OPENAT;
    sqe.fd = AT_FDCWD;
    sqe.addr = (unsigned long)path;
    sqe.open_flags = flags;
    sqe.len = 0644;
    int fd = ring_run(&r, &sqe);
    if (fd < 0) return 11;
    memset(&sqe, 0, sizeof sqe);
    sqe.opcode = IORING_OP_WRITE;
    sqe.fd = fd;
    sqe.addr = (unsigned long)text;
    sqe.len = strlen(text);
    sqe.off = 0;
    if (ring_run(&r, &sqe) != (int)strlen(text)) return 12;
    memset(&sqe, 0, sizeof sqe);
    sqe.opcode = IORING_OP_CLOSE;
    sqe.fd = fd;
    if (ring_run(&r, &sqe) != 0) return 13;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *mode = argv[1], *path = argv[2];
    const char *text = argc > 3 ? argv[3] : "changed behind reflex's back\n";
    char self[64];
    if (!strcmp(mode, "uring")) return by_uring(path, text, O_WRONLY | O_TRUNC);
    if (!strcmp(mode, "uring-create")) return by_uring(path, text, O_WRONLY | O_CREAT | O_TRUNC);
    if (!strcmp(mode, "mknod")) {
        if (mknod(path, S_IFREG | 0644, 0)) return 3;
        int fd = open(path, O_WRONLY);
        if (fd < 0) return 4;
        if (write(fd, text, strlen(text)) < 0) return 5;
        return close(fd) ? 6 : 0;
    }
    if (!strcmp(mode, "hold")) {
        int fd = open(path, O_WRONLY);
        if (fd < 0) return 3;
        usleep(1500000);
        if (pwrite(fd, text, strlen(text), 0) < 0) return 4;
        _exit(0);
    }
    if (!strcmp(mode, "mmap")) {
        int fd = open(path, O_RDWR);
        if (fd < 0) return 3;
        struct stat st;
        if (fstat(fd, &st) || st.st_size == 0) return 4;
        char *map = mmap(0, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) return 5;
        close(fd);
        usleep(1500000);
        size_t n = strlen(text) < (size_t)st.st_size ? strlen(text) : (size_t)st.st_size;
        memcpy(map, text, n);
        _exit(0);
    }
    if (!strcmp(mode, "dirfd-chmod")) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (!slash) return 2;
        *slash = 0;
        int dfd = open(dir, O_PATH | O_DIRECTORY);
        if (dfd < 0) return 3;
        int seconds = argc > 3 ? atoi(argv[3]) : 1;
        for (long i = 0; i < (long)seconds * 200; i++) {
            if (fchmodat(dfd, slash + 1, (i & 1) ? 0644 : 0600, 0)) return 4;
            usleep(5000);
        }
        return 0;
    }
    if (!strcmp(mode, "clonefiles")) {
        long child = syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
        if (child < 0) return 3;
        if (child == 0) {
            int fd = open(path, O_WRONLY);
            _exit(fd < 0 ? 1 : 0);
        }
        int status = 0;
        waitpid(child, &status, 0);
        for (int fd = 3; fd < 256; fd++) {
            char link[64], target[4096];
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            ssize_t n = readlink(link, target, sizeof target - 1);
            if (n < 0) continue;
            target[n] = 0;
            if (strcmp(target, path)) continue;
            if (pwrite(fd, text, strlen(text), 0) < 0) return 5;
            return 0;
        }
        /* The descriptor never reached the shared table: nothing to use. */
        return WIFSIGNALED(status) ? 7 : 6;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 3;
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    if (!strcmp(mode, "chmod")) return chmod(self, 0666) ? 4 : 0;
    if (!strcmp(mode, "truncate")) return truncate(self, 0) ? 4 : 0;
    return 2;
}
