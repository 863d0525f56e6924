#!/bin/sh
# vse-setup: the guest side of a vse VM, the same in every base (the minimal guest's /init runs it,
# the Debian guest's vse-ready.service runs it). Everything it needs comes from the kernel command
# line that the host's deploy wrote:
#   vse.hostname=NAME            host name (also the VM's name on the host)
#   vse.user=NAME:UID:GID        the job's user, made in /etc/passwd and /etc/group
#   vse.key=BASE64               the job's ssh-ed25519 public key: root's only authorized key
#   vse.mgmt=MAC                 the NIC of the host's channel (user-mode network, SSH forwarded)
#   vse.net=MAC,ADDR/LEN         the NIC and address on the job's private network
#   vse.hosts=NAME=ADDR,...      the job's VMs, for /etc/hosts
#   vse.mounts=TAG:PATH:ro|rw,.. virtiofs shares of host paths the site allows
# Then it starts the SSH server (dropbear) with the host key the host made for this VM (QEMU's
# firmware config, opt/org.vse/hostkey, readable by root only) and says `VSE-READY NAME` on the
# org.vse.0 virtio-serial port. Without that key it makes one and announces it:
# `VSE-READY NAME KEYTYPE KEY`, on a channel nobody but QEMU can write to. Problems go to the
# console and the line says `VSE-FAILED NAME why` instead.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 022
name= user= key= mgmt= net= hosts= mounts=
read -r cmdline </proc/cmdline
for arg in $cmdline; do
  case "$arg" in
    vse.hostname=*) name=${arg#*=} ;;
    vse.user=*) user=${arg#*=} ;;
    vse.key=*) key=${arg#*=} ;;
    vse.mgmt=*) mgmt=${arg#*=} ;;
    vse.net=*) net=${arg#*=} ;;
    vse.hosts=*) hosts=${arg#*=} ;;
    vse.mounts=*) mounts=${arg#*=} ;;
  esac
done
say() { echo "vse-guest: $*" >/dev/console; }
problems=
problem() { say "$*"; problems="$problems${problems:+; }$*"; }

if [ -n "$name" ]; then
  echo "$name" >/proc/sys/kernel/hostname
  echo "$name" >/etc/hostname 2>/dev/null || :
fi
read -r name </proc/sys/kernel/hostname

# the NIC with a given MAC address (names differ between bases; udev may still be at it: 10 s)
nic() {
  tries=0
  while [ "$tries" -lt 100 ]; do
    for n in /sys/class/net/*; do
      read -r a <"$n/address" 2>/dev/null || continue
      [ "$a" = "$1" ] && { echo "${n##*/}"; return 0; }
    done
    sleep 0.1
    tries=$((tries + 1))
  done
  return 1
}
ip link set lo up 2>/dev/null
# ping without privileges (ICMP sockets), as Debian systems allow it
echo "0 2147483647" >/proc/sys/net/ipv4/ping_group_range 2>/dev/null
if [ -n "$mgmt" ]; then
  if dev=$(nic "$mgmt"); then
    ip link set "$dev" up && ip addr add 10.0.2.15/24 dev "$dev" || problem "cannot configure $dev"
  else
    problem "no NIC with MAC $mgmt"
  fi
fi
if [ -n "$net" ]; then
  mac=${net%%,*}
  if dev=$(nic "$mac"); then
    ip link set "$dev" up && ip addr add "${net#*,}" dev "$dev" || problem "cannot configure $dev"
  else
    problem "no NIC with MAC $mac"
  fi
fi
{
  echo "127.0.0.1 localhost"
  echo "127.0.1.1 $name"
  old_ifs=$IFS; IFS=,
  for h in $hosts; do echo "${h#*=} ${h%%=*}"; done
  IFS=$old_ifs
} >/etc/hosts

if [ -n "$user" ]; then
  uname=${user%%:*} rest=${user#*:}
  uid=${rest%%:*} gid=${rest#*:}
  if [ "$uid" != 0 ]; then
    grep -q "^$uname:" /etc/passwd 2>/dev/null || echo "$uname:x:$uid:$gid::/home/$uname:/bin/sh" >>/etc/passwd
    grep -q "^[^:]*:[^:]*:$gid:" /etc/group 2>/dev/null || echo "$uname:x:$gid:" >>/etc/group
    mkdir -p "/home/$uname" && chown "$uid:$gid" "/home/$uname"
  fi
fi

old_ifs=$IFS; IFS=,
for m in $mounts; do
  tag=${m%%:*} rest=${m#*:}
  path=${rest%:*} mode=${rest##*:}
  mkdir -p "$path" && mount -t virtiofs -o "$mode" "$tag" "$path" || problem "cannot mount $tag on $path"
done
IFS=$old_ifs

hostkey=
if [ -n "$key" ]; then
  mkdir -p /root/.ssh /etc/dropbear /var/log
  chmod 700 /root/.ssh
  echo "ssh-ed25519 $key vse-job" >/root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
  rm -f /etc/dropbear/vse_ed25519
  given=/sys/firmware/qemu_fw_cfg/by_name/opt/org.vse/hostkey/raw
  [ -r "$given" ] || modprobe -q qemu_fw_cfg 2>/dev/null || :
  if [ -r "$given" ] && cat "$given" >/etc/dropbear/vse_ed25519 && chmod 600 /etc/dropbear/vse_ed25519; then
    :
  elif dropbearkey -t ed25519 -f /etc/dropbear/vse_ed25519 >/dev/null 2>&1; then
    hostkey=$(dropbearkey -y -f /etc/dropbear/vse_ed25519 2>/dev/null | grep '^ssh-ed25519 ' | cut -d' ' -f1,2)
  else
    problem "no SSH host key (none given, dropbearkey failed)"
  fi
  if [ -s /etc/dropbear/vse_ed25519 ]; then
    dropbear -r /etc/dropbear/vse_ed25519 -s -m -p 22 -P /run/dropbear.pid -E 2>>/var/log/dropbear.log || problem "the SSH server did not start"
  fi
fi

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
if [ -z "$port" ]; then
  say "no org.vse.0 port; the host cannot see this guest"
  exit 1
fi
if [ -n "$problems" ]; then
  say "failed $name: $problems"
  line="VSE-FAILED $name $problems"
else
  say "ready $name"
  line="VSE-READY $name${hostkey:+ $hostkey}"
fi
# The write blocks until the host reads the port: in the background, so the boot goes on.
echo "$line" >"$port" &
