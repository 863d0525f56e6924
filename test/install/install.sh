#!/usr/bin/env bash
# `make install` honours DESTDIR, PREFIX and SYSCONFDIR: everything lands under DESTDIR, and what
# is installed names the final paths (PREFIX), never DESTDIR. Prints "install: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
dest=$(mktemp -d /tmp/vse-destdir-XXXXXX)
trap 'rm -rf "$dest"' EXIT
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1"; fi; }
make --no-print-directory install DESTDIR="$dest" PREFIX=/opt/vse SYSCONFDIR=/etc/opt/vse >"$dest.log" 2>&1
check "make install succeeds" "[ $? -eq 0 ] || { tail -20 '$dest.log'; false; }"
rm -f "$dest.log"
for f in opt/vse/bin/vse opt/vse/lib/vse/prolog opt/vse/lib/vse/epilog; do
  check "$f is an executable under DESTDIR" "[ -x '$dest/$f' ]"
  check "$f starts an absolute node" "head -1 '$dest/$f' | grep -q '^#!/'"
  check "$f points at PREFIX, not DESTDIR" "grep -q \"'/opt/vse/lib/vse/dist/\" '$dest/$f' && ! grep -q '$dest' '$dest/$f'"
done
check "the SPANK plugin is installed" "[ -f '$dest/opt/vse/lib/slurm/vse.so' ]"
check "the plugstack snippet names the installed plugin and CLI" "grep -qx 'required /opt/vse/lib/slurm/vse.so vse=/opt/vse/bin/vse' '$dest/etc/opt/vse/slurm/plugstack.conf.d/vse.conf'"
check "the site config goes to SYSCONFDIR" "[ -f '$dest/etc/opt/vse/vse/site.json' ]"
check "the shipped base descriptions and schema are installed" "[ -f '$dest/opt/vse/lib/vse/config/descriptions/minimal.xml' ] && [ -f '$dest/opt/vse/lib/vse/config/schema/description.schema.json' ]"
check "install.json records PREFIX and SYSCONFDIR" "grep -q '\"prefix\":\"/opt/vse\"' '$dest/opt/vse/lib/vse/install.json' && grep -q '\"sysconfdir\":\"/etc/opt/vse\"' '$dest/opt/vse/lib/vse/install.json'"
check "only production dependencies are installed" "[ -d '$dest/opt/vse/lib/vse/node_modules/fast-xml-parser' ] && [ ! -d '$dest/opt/vse/lib/vse/node_modules/vitest' ]"
check "nothing is written outside DESTDIR" "[ ! -e /opt/vse ] && [ ! -e /etc/opt/vse ]"
echo "install: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
