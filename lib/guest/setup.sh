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

# Under TCG every process costs milliseconds: no $(...) subshells, few programs, one run of `ip`
# (iproute2's -batch) or one of busybox's ifconfig per NIC.

# the NIC with MAC address $1, in $dev (names differ between bases; udev may still be at it: 10 s)
find_nic() {
  dev= tries=0
  while [ "$tries" -lt 100 ]; do
    for n in /sys/class/net/*; do
      read -r a <"$n/address" 2>/dev/null || continue
      [ "$a" = "$1" ] && { dev=${n##*/}; return 0; }
    done
    sleep 0.1
    tries=$((tries + 1))
  done
  return 1
}
# the dotted netmask of prefix length $1, in $mask
netmask() {
  bits=$1 mask= k=0
  while [ "$k" -lt 4 ]; do
    if [ "$bits" -ge 8 ]; then o=255; bits=$((bits - 8)); else o=$(((255 << (8 - bits)) & 255)); bits=0; fi
    mask=$mask${mask:+.}$o
    k=$((k + 1))
  done
}
# ping without privileges (ICMP sockets), as Debian systems allow it
echo "0 2147483647" >/proc/sys/net/ipv4/ping_group_range 2>/dev/null
nics= # lines "DEV ADDR/LEN"
if [ -n "$mgmt" ]; then
  if find_nic "$mgmt"; then nics="$dev 10.0.2.15/24"; else problem "no NIC with MAC $mgmt"; fi
fi
if [ -n "$net" ]; then
  mac=${net%%,*}
  if find_nic "$mac"; then nics="$nics${nics:+
}$dev ${net#*,}"; else problem "no NIC with MAC $mac"; fi
fi
if command -v ifconfig >/dev/null 2>&1; then
  ifconfig lo up 2>/dev/null
  while read -r d a; do
    [ -n "$d" ] || continue
    netmask "${a#*/}"
    ifconfig "$d" "${a%/*}" netmask "$mask" up || problem "cannot configure $d ($a)"
  done <<NICS
$nics
NICS
else
  batch="link set lo up"
  while read -r d a; do
    [ -n "$d" ] && batch="$batch
addr add $a dev $d
link set $d up"
  done <<NICS
$nics
NICS
  out=$(printf '%s\n' "$batch" | ip -batch - 2>&1) || problem "cannot configure the network: $out"
fi
{
  echo "127.0.0.1 localhost"
  echo "127.0.1.1 $name"
  old_ifs=$IFS; IFS=,
  for h in $hosts; do echo "${h#*=} ${h%%=*}"; done
  IFS=$old_ifs
} >/etc/hosts

# whether file $1 has an entry (first field) named $2
has_name() {
  while IFS=: read -r n _ || [ -n "$n" ]; do # (a last line without its newline counts too)
    [ "$n" = "$2" ] && return 0
  done <"$1"
  return 1
}
# whether file $1 (/etc/group) has an entry with id (third field) $2
has_gid() {
  while IFS=: read -r _ _ g _ || [ -n "$g" ]; do
    [ "$g" = "$2" ] && return 0
  done <"$1"
  return 1
}
if [ -n "$user" ]; then
  uname=${user%%:*} rest=${user#*:}
  uid=${rest%%:*} gid=${rest#*:}
  if [ "$uid" != 0 ]; then
    has_name /etc/passwd "$uname" 2>/dev/null || echo "$uname:x:$uid:$gid::/home/$uname:/bin/sh" >>/etc/passwd
    has_gid /etc/group "$gid" 2>/dev/null || echo "$uname:x:$gid:" >>/etc/group
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
  # root's own files, private by the umask (/run is new at every boot: nothing is there before)
  umask 077
  [ -d /root/.ssh ] || mkdir -m 700 /root/.ssh # (the minimal guest's image has it: a process less)
  echo "ssh-ed25519 $key vse-job" >/root/.ssh/authorized_keys
  # dropbear reads the key the host gave where the firmware config shows it (root's only)
  hk=/sys/firmware/qemu_fw_cfg/by_name/opt/org.vse/hostkey/raw
  [ -r "$hk" ] || modprobe -q qemu_fw_cfg 2>/dev/null || :
  if [ -r "$hk" ]; then
    :
  elif hk=/run/vse-hostkey && dropbearkey -t ed25519 -f "$hk" >/dev/null 2>&1; then
    hostkey=$(dropbearkey -y -f "$hk" 2>/dev/null | grep '^ssh-ed25519 ' | cut -d' ' -f1,2)
  else
    problem "no SSH host key (none given, dropbearkey failed)"
  fi
  umask 022
  if [ -r "$hk" ]; then
    dropbear -r "$hk" -s -m -p 22 -P /run/dropbear.pid -E 2>>/var/log/dropbear.log || problem "the SSH server did not start"
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
# Once the host has the line, hand the memory the guest does not use back to the host: free page
# reporting through the memory balloon. The driver asks for 2 MiB blocks, and the kernel reports
# only while more than 64 MiB (32 of them) above its low watermark are free, which a small guest
# seldom has: in 128 KiB blocks the threshold is 4 MiB. (A Debian guest's udev may have loaded the
# driver already; the order is set after it, which otherwise sets its own.)
balloon() {
  [ -d /sys/module/virtio_balloon ] || modprobe -q virtio_balloon 2>/dev/null || insmod /lib/modules/virtio_balloon.ko 2>/dev/null
  order=/sys/module/page_reporting/parameters/page_reporting_order
  [ -w "$order" ] && echo 5 >"$order"
}
# The write blocks until the host reads the port: in the background, so the boot goes on; the
# balloon after it, so that it does not hold the line back.
{ echo "$line" >"$port"; balloon; } </dev/null >/dev/null 2>&1 &
