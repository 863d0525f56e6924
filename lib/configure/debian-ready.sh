#!/bin/sh
# vse-ready: the readiness agent of the Debian base (installed as /usr/local/sbin/vse-ready and run
# once by vse-ready.service). It takes the VM's name from vse.hostname= on the kernel command line,
# makes it the hostname, then tells the host on the org.vse.0 virtio-serial port, the same protocol
# as the minimal guest's /init: `VSE-READY <hostname>` on the port, `vse-guest: ready <hostname>` on
# the console.
# Shell builtins only on the way (no cat, no hostname): under TCG every exec costs a lot.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
name=
read -r cmdline </proc/cmdline
for arg in $cmdline; do
  case "$arg" in vse.hostname=*) name="${arg#vse.hostname=}" ;; esac
done
if [ -n "$name" ]; then
  echo "$name" >/proc/sys/kernel/hostname
  echo "$name" >/etc/hostname 2>/dev/null || :
fi
read -r name </proc/sys/kernel/hostname

# /etc/modules-load.d/vse.conf loads virtio_console early; do not depend on its timing.
[ -d /sys/class/virtio-ports ] || modprobe -q virtio_console 2>/dev/null || :
port=
i=0
while [ -z "$port" ] && [ "$i" -lt 300 ]; do # at most about 30 s
  for p in /sys/class/virtio-ports/*; do
    [ -r "$p/name" ] || continue
    read -r pname <"$p/name" || continue
    [ "$pname" = org.vse.0 ] && [ -c "/dev/${p##*/}" ] && port="/dev/${p##*/}"
  done
  [ -n "$port" ] || { sleep 0.1; i=$((i + 1)); }
done
echo "vse-guest: ready $name" >/dev/console
if [ -z "$port" ]; then
  echo "vse-guest: no org.vse.0 port; the host cannot see this guest" >/dev/console
  exit 1
fi
# The write blocks until the host reads the port: do it in the background, so that the boot goes
# on even when no host listens yet (the unit stays active, and keeps the writer, until then).
echo "VSE-READY $name" >"$port" &
