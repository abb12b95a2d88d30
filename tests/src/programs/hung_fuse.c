/* hung_fuse MOUNTPOINT CONTENT [STOP]: a FUSE filesystem speaking the raw
 * /dev/fuse protocol, holding one regular file `file` with CONTENT, and
 * the files created in it (a few). It stops itself (SIGSTOP) as STOP says:
 * `write` (the default) once it has answered a WRITE, `create` once it
 * has answered a CREATE, `open-after-write` at the first OPEN of a file
 * after a WRITE, leaving that OPEN unanswered. From then on every call
 * that needs it (open, stat, read, close) hangs until it is killed, as
 * with a hung FUSE daemon. Attributes and entries are never cached, so
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

#define FILES 8
/* Node i + 2 is files[i]; the root is node 1. */
static struct { char name[64]; char content[4096]; size_t size; } files[FILES];
static int nfiles;
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

static int known(uint64_t node) { return node >= 2 && node < (uint64_t)nfiles + 2; }

static void attr(uint64_t node, struct fuse_attr *a) {
    memset(a, 0, sizeof *a);
    a->ino = node;
    a->nlink = node == 1 ? 2 : 1;
    a->mode = node == 1 ? (S_IFDIR | 0755) : (S_IFREG | 0644);
    a->size = known(node) ? files[node - 2].size : 0;
    a->blksize = 4096;
}

static int find(const char *name) {
    for (int i = 0; i < nfiles; i++)
        if (!strcmp(files[i].name, name)) return i;
    return -1;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *stop = argc > 3 ? argv[3] : "write";
    int written = 0;
    strcpy(files[0].name, "file");
    files[0].size = strlen(argv[2]) < sizeof files[0].content ? strlen(argv[2]) : sizeof files[0].content;
    memcpy(files[0].content, argv[2], files[0].size);
    nfiles = 1;
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
            int i = in->nodeid == 1 ? find(arg) : -1;
            if (i < 0) { reply(in->unique, -ENOENT, 0, 0); break; }
            struct fuse_entry_out out = {0};
            out.nodeid = i + 2;
            out.generation = 1;
            attr(i + 2, &out.attr);
            reply(in->unique, 0, &out, sizeof out);
            break;
        }
        case FUSE_CREATE: {
            const char *name = (const char *)((struct fuse_create_in *)arg + 1);
            int i = find(name);
            if (i < 0 && (nfiles == FILES || strlen(name) >= sizeof files[0].name)) {
                reply(in->unique, -ENOSPC, 0, 0);
                break;
            }
            if (i < 0) {
                i = nfiles++;
                strcpy(files[i].name, name);
            }
            files[i].size = 0;
            struct { struct fuse_entry_out entry; struct fuse_open_out open; } out = {0};
            out.entry.nodeid = i + 2;
            out.entry.generation = 1;
            attr(i + 2, &out.entry.attr);
            out.open.open_flags = FOPEN_DIRECT_IO;
            reply(in->unique, 0, &out, sizeof out);
            if (!strcmp(stop, "create")) raise(SIGSTOP);
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
            if (known(in->nodeid) && (set->valid & FATTR_SIZE) && set->size <= sizeof files[0].content)
                files[in->nodeid - 2].size = set->size;
            struct fuse_attr_out out = {0};
            attr(in->nodeid, &out.attr);
            reply(in->unique, 0, &out, sizeof out);
            break;
        }
        case FUSE_OPEN:
            if (written && !strcmp(stop, "open-after-write")) raise(SIGSTOP);
            /* fall through */
        case FUSE_OPENDIR: {
            struct fuse_open_out out = {0};
            out.open_flags = FOPEN_DIRECT_IO;
            reply(in->unique, 0, &out, sizeof out);
            break;
        }
        case FUSE_READ: {
            struct fuse_read_in *r = arg;
            if (!known(in->nodeid)) { reply(in->unique, -EIO, 0, 0); break; }
            size_t size = files[in->nodeid - 2].size, len = 0;
            if (r->offset < size) len = size - r->offset;
            if (len > r->size) len = r->size;
            reply(in->unique, 0, files[in->nodeid - 2].content + r->offset, len);
            break;
        }
        case FUSE_WRITE: {
            struct fuse_write_in *w = arg;
            const char *data = (const char *)(w + 1);
            if (known(in->nodeid) && w->offset + w->size <= sizeof files[0].content) {
                size_t *size = &files[in->nodeid - 2].size;
                memcpy(files[in->nodeid - 2].content + w->offset, data, w->size);
                if (w->offset + w->size > *size) *size = w->offset + w->size;
            }
            struct fuse_write_out out = {0};
            out.size = w->size;
            reply(in->unique, 0, &out, sizeof out);
            written = 1;
            if (!strcmp(stop, "write")) raise(SIGSTOP);
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
