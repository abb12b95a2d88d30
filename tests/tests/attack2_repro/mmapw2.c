// mmapw FILE OFFSET TEXT [delay_ms]: open O_RDWR, mmap shared, close the fd,
// wait delay_ms, then overwrite bytes at OFFSET through the mapping.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int c, char **v) {
  if (c < 4) return 2;
  int fd = open(v[1], O_RDWR);
  if (fd < 0) { perror("open"); return 1; }
  struct stat st; fstat(fd, &st);
  char *m = mmap(0, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) { perror("mmap"); return 1; }
  close(fd);
  usleep((c > 4 ? atoi(v[4]) : 1500) * 1000);
  size_t off = atol(v[2]), n = strlen(v[3]);
  if (off + n > (size_t)st.st_size) n = st.st_size - off;
  memcpy(m + off, v[3], n);
  sleep(c > 5 ? atoi(v[5]) : 0); return 0;
}
