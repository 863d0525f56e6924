#!/bin/busybox sh
# /init of the minimal vse guest: mount the basics, load the drivers, run the image's own start-up
# scripts, then /usr/lib/vse/setup.sh (lib/guest/setup.sh: name, user, network, SSH server,
# shares, and the ready line to the host on the vse virtio-serial port).
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin /root /home /var/log
# /tmp is everyone's, as on any Unix system (the job's user writes there, vse stages batch scripts there)
/bin/busybox chmod 1777 /tmp
# busybox's applets are links in the image; an image built without them gets them now
[ -e /bin/mount ] || /bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
read -r cmdline </proc/cmdline
for m in $(cat /lib/modules/load-order); do
  # file sharing only when the VM has shares: each module costs time under TCG
  case "$m" in fuse | virtiofs) case "$cmdline" in *vse.mounts=*) ;; *) continue ;; esac ;; esac
  insmod "/lib/modules/$m.ko" 2>/dev/null
done
# the image's own start-up scripts (files and build steps of the description put them there)
for script in /etc/vse/boot.d/*.sh; do
  [ -r "$script" ] || continue
  echo "vse-guest: running $script" >/dev/console
  sh "$script" >/dev/console 2>&1 </dev/null
done
sh /usr/lib/vse/setup.sh
while :; do sleep 3600; done
