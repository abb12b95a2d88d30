/* hung_fuse MOUNTPOINT CONTENT: a FUSE filesystem speaking the raw
 * /dev/fuse protocol, holding one regular file `file` with CONTENT. Once
 * it has answered a WRITE it stops itself (SIGSTOP): from then on every
 * call that needs it (open, stat, read, close) hangs until it is killed,
 * as with a hung FUSE daemon. Attributes and entries are never cached, so
 * every stat goes to the daemon. Prints "mounted" when ready. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static char content[65536];
static size_t size;
static int fd;

static void reply(uint64_t unique, int error, const void *body, size_t len) {
    char buf[sizeof(struct fuse_out_header) + 4096];
    struct fuse_out_header *out = (void *)buf;
    if (len > 4096) len = 4096;
    out->len = sizeof *out + (error ? 0 : len);
    out->error = error;
    out->unique = unique;
    if (!error && len) memcpy(buf + sizeof *out, body, len);
    if (write(fd, buf, out->len) < 0 && errno != ENOENT) perror("reply");
}

static void attr(uint64_t node, struct fuse_attr *a) {
    memset(a, 0, sizeof *a);
    a->ino = node;
    a->nlink = node == 1 ? 2 : 1;
    a->mode = node == 1 ? (S_IFDIR | 0755) : (S_IFREG | 0644);
    a->size = node == 1 ? 0 : size;
    a->blksize = 4096;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    size = strlen(argv[2]);
    memcpy(content, argv[2], size);
    fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0) { perror("/dev/fuse"); return 3; }
    char opts[128];
    snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd);
    if (mount("hungfs", argv[1], "fuse.hungfs", MS_NOSUID | MS_NODEV, opts)) {
        perror("mount");
        return 4;
    }
    static char buf[1 << 20];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return 0; /* unmounted */
        }
        struct fuse_in_header *in = (void *)buf;
        void *arg = buf + sizeof *in;
        switch (in->opcode) {
        case FUSE_INIT: {
            struct fuse_init_in *init = arg;
            struct fuse_init_out out = {0};
            out.major = FUSE_KERNEL_VERSION;
            out.minor = init->minor < FUSE_KERNEL_MINOR_VERSION ? init->minor : FUSE_KERNEL_MINOR_VERSION;
            out.max_readahead = init->max_readahead;
            out.max_write = 4096;
            reply(in->unique, 0, &out, sizeof out);
            printf("mounted\n");
            fflush(stdout);
            break;
        }
        case FUSE_LOOKUP: {
            if (in->nodeid != 1 || strcmp(arg, "file")) { reply(in->unique, -ENOENT, 0, 0); break; }
            struct fuse_entry_out out = {0};
            out.nodeid = 2;
            out.generation = 1;
            attr(2, &out.attr);
            reply(in->unique, 0, &out, sizeof out);
            break;
        }
        case FUSE_GETATTR: {
            struct fuse_attr_out out = {0};
            attr(in->nodeid, &out.attr);
            reply(in->unique, 0, &out, sizeof out);
            break;
        }
        case FUSE_SETATTR: {
            struct fuse_setattr_in *set = arg;
            if ((set->valid & FATTR_SIZE) && set->size <= sizeof content) size = set->size;
            struct fuse_attr_out out = {0};
            attr(in->nodeid, &out.attr);
            reply(in->unique, 0, &out, sizeof out);
            break;
        }
        case FUSE_OPEN:
        case FUSE_OPENDIR: {
            struct fuse_open_out out = {0};
            out.open_flags = FOPEN_DIRECT_IO;
            reply(in->unique, 0, &out, sizeof out);
            break;
        }
        case FUSE_READ: {
            struct fuse_read_in *r = arg;
            size_t len = 0;
            if (r->offset < size) len = size - r->offset;
            if (len > r->size) len = r->size;
            reply(in->unique, 0, content + r->offset, len);
            break;
        }
        case FUSE_WRITE: {
            struct fuse_write_in *w = arg;
            const char *data = (const char *)(w + 1);
            if (w->offset + w->size <= sizeof content) {
                memcpy(content + w->offset, data, w->size);
                if (w->offset + w->size > size) size = w->offset + w->size;
            }
            struct fuse_write_out out = {0};
            out.size = w->size;
            reply(in->unique, 0, &out, sizeof out);
            raise(SIGSTOP);
            break;
        }
        case FUSE_READDIR: reply(in->unique, 0, 0, 0); break;
        case FUSE_STATFS: {
            struct fuse_statfs_out out = {0};
            out.st.bsize = 4096;
            out.st.namelen = 255;
            reply(in->unique, 0, &out, sizeof out);
            break;
        }
        case FUSE_FLUSH:
        case FUSE_RELEASE:
        case FUSE_RELEASEDIR:
        case FUSE_FSYNC:
        case FUSE_DESTROY:
            reply(in->unique, 0, 0, 0);
            break;
        case FUSE_FORGET:
        case FUSE_BATCH_FORGET:
        case FUSE_INTERRUPT:
            break;
        default:
            reply(in->unique, -ENOSYS, 0, 0);
        }
    }
}
