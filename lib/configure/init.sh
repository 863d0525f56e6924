#!/bin/busybox sh
# /init of the minimal vse guest: mount the basics, load the virtio drivers, take the VM's name
# from the kernel command line, then tell the host it is ready on the vse virtio-serial port.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/load-order); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
name=vse
for arg in $(cat /proc/cmdline); do
  case "$arg" in vse.hostname=*) name="${arg#vse.hostname=}" ;; esac
done
hostname "$name"
ip link set lo up 2>/dev/null
port=
i=0
while [ -z "$port" ] && [ "$i" -lt 500 ]; do
  for p in /sys/class/virtio-ports/*; do
    [ -r "$p/name" ] && [ "$(cat "$p/name")" = org.vse.0 ] && port="/dev/${p##*/}"
  done
  [ -n "$port" ] || { usleep 10000; i=$((i + 1)); }
done
# the image's own start-up scripts (files and build steps of the description put them there)
for script in /etc/vse/boot.d/*.sh; do
  [ -r "$script" ] || continue
  echo "vse-guest: running $script" >/dev/console
  sh "$script" >/dev/console 2>&1 </dev/null
done
echo "vse-guest: ready $name" >/dev/console
if [ -n "$port" ]; then
  echo "VSE-READY $name" >"$port"
else
  echo "vse-guest: no org.vse.0 port; the host cannot see this guest" >/dev/console
fi
while :; do sleep 3600; done
