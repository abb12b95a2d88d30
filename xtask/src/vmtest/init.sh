#!/bin/busybox sh
# The guest's first stage (PID 1 in the initramfs): load the 9p and overlay
# modules, mount the host's root read-only under a tmpfs overlay, and hand
# over to stage2 there. Any failure powers the guest off with the reason
# on the console, so the host never waits for a hung guest.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "vmtest-init: $*"; echo o > /proc/sysrq-trigger; sleep 60; }
for m in $(cat /modules.order); do
  insmod "/modules/$m" || fail "insmod $m"
done
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /lower || fail "mount hostroot"
mount -t tmpfs -o mode=755 upper /upper || fail "mount upper"
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot \
  || fail "mount overlay"
mkdir -p /newroot/vmtest /newroot/vmtest-out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vmout /newroot/vmtest-out || fail "mount vmout"
cp /bin/busybox /stage2.sh /newroot/vmtest/
for d in proc sys dev; do mount --move /$d /newroot/$d; done
exec switch_root /newroot /vmtest/busybox sh /vmtest/stage2.sh
