# The guest's second stage, PID 1 on the overlay of the host's root: the
# mounts an agent host has, loopback up, then the plan the host wrote
# (/vmtest-out/plan.sh: environment, `reflex doctor`, the test binaries),
# each binary's output and exit code under /vmtest-out/results/.
B=/vmtest/busybox
# /tmp on ext4, as on the host: fanotify's FID marks, which file
# policies use, need a filesystem with file handles, and tmpfs gives none
# before 6.6.
$B mount -t ext4 /dev/vda /tmp && $B chmod 1777 /tmp
$B mount -t tmpfs -o mode=755 run /run
$B mount -t cgroup2 cgroup2 /sys/fs/cgroup
$B mount -t tracefs tracefs /sys/kernel/tracing
$B mount -t debugfs debugfs /sys/kernel/debug
$B mount -t securityfs securityfs /sys/kernel/security
$B mount -t bpf bpf /sys/fs/bpf
$B mkdir -p /dev/pts /dev/shm
$B mount -t devpts devpts /dev/pts
$B mount -t tmpfs -o mode=1777 shm /dev/shm
# What udev makes on a host and devtmpfs does not: exec through /dev/fd/N
# is one of the spellings the exec tests try.
$B ln -sf /proc/self/fd /dev/fd
$B ln -sf /proc/self/fd/0 /dev/stdin
$B ln -sf /proc/self/fd/1 /dev/stdout
$B ln -sf /proc/self/fd/2 /dev/stderr
$B ip link set lo up
$B hostname vmtest
export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /vmtest-out/results
. /vmtest-out/plan.sh
echo "vmtest: done"
echo o > /proc/sysrq-trigger
$B sleep 60
