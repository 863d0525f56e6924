#!/bin/sh
# Build the minimal guest's SSH server: dropbear (server and dropbearkey) from Debian's own source
# package, linked statically (static-pie), into DIR (build/guest).
#
# Why not Debian's binary: it is built PIE with immediate binding against six shared libraries,
# and under TCG the dynamic loader's work took about 25 ms of every boot (the server starts once
# per VM, before the VM counts as ready). The static build starts without a loader.
#
# The source is the one of this machine's Debian release (bookworm and its security updates), read
# from the deb-src twins of the machine's own apt sources with a private apt state under DIR: the
# machine's apt configuration is never changed, and no root is needed. Build options follow Debian's
# (debian/localoptions.h, hardening flags); zlib, PAM, syslog-less logging and login records are
# left out (vse's SSH carries no terminal sessions and logs with -E).
set -eu
mkdir -p "${1:?usage: build-dropbear.sh DIR}"
out=$(cd "$1" && pwd)
work=$out/dropbear-src
rm -rf "$work"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/sources.list.d"

# deb-src entries for what the machine's apt reads as deb entries
: >"$work/apt/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -r "$f" ] && sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" >>"$work/apt/sources.list"
done
for f in /etc/apt/sources.list.d/*.sources; do
  [ -r "$f" ] && sed 's/^Types:.*/Types: deb-src/' "$f" >"$work/apt/sources.list.d/$(basename "$f")"
done
apt="apt-get -q -o Dir::Etc::SourceList=$work/apt/sources.list -o Dir::Etc::SourceParts=$work/apt/sources.list.d \
  -o Dir::State::Lists=$work/apt/lists -o Dir::Cache=$work/apt/cache -o Debug::NoLocking=1"
# as root, apt would hand the downloads to its _apt user, who cannot write here
[ "$(id -u)" != 0 ] || apt="$apt -o APT::Sandbox::User=root"

echo "build-dropbear: fetching Debian's dropbear source (deb-src of this machine's apt sources)"
# shellcheck disable=SC2086 # $apt is a command with its options
$apt update >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; echo "build-dropbear: apt-get update failed (hint: the machine's Debian mirror must be reachable)" >&2; exit 1; }
# shellcheck disable=SC2086
(cd "$work" && $apt source --download-only dropbear >>"$work/apt.log" 2>&1) || { tail -20 "$work/apt.log" >&2; echo "build-dropbear: no dropbear source package found" >&2; exit 1; }
dsc=$(ls "$work"/dropbear_*.dsc)
dpkg-source --no-check -x "$dsc" "$work/src" >>"$work/apt.log" 2>&1 || { tail -20 "$work/apt.log" >&2; exit 1; }

echo "build-dropbear: building $(basename "$dsc" .dsc) (static)"
cd "$work/src"
cp debian/localoptions.h .
./configure --disable-zlib --disable-pam --disable-lastlog --disable-utmp --disable-utmpx --disable-wtmp --disable-wtmpx \
  CFLAGS="-O2 -fPIE -fstack-protector-strong -D_FORTIFY_SOURCE=2" LDFLAGS="-static-pie -Wl,-z,relro,-z,now" >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log" >&2; exit 1; }
make -j"$(nproc)" PROGRAMS="dropbear dropbearkey" >>"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }
for p in dropbear dropbearkey; do
  strip -o "$out/$p.new" "$p"
  mv "$out/$p.new" "$out/$p"
done
cd / && rm -rf "$work"
echo "build-dropbear: $out/dropbear, $out/dropbearkey"
