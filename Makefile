# vse: build, check, test, install. `make help` lists the targets.
SHELL := /bin/bash
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR ?=
NODE ?= $(shell readlink -f "$$(command -v node)")
SPANKDIR ?= $(PREFIX)/lib/slurm
# Where the Slurm suite installs vse (the cluster loads it from there, as on a real site).
TEST_PREFIX ?= /tmp/vse-prefix
VITEST := node_modules/.bin/vitest

# Debian packages the project drives (see docs/admin.md).
DEB_PACKAGES := qemu-system-x86 qemu-utils busybox-static kmod cpio bubblewrap tar mmdebstrap uidmap e2fsprogs \
	dropbear-bin dpkg-dev bzip2 xz-utils iproute2 libc6-dev libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
	slurmctld slurmd slurm-client munge libslurm-dev gcc make

.PHONY: help setup deps build check typecheck lint unit spank-test test test-qemu test-slurm \
	install test-prefix test-install demo bench bench-launch bench-smoke schema clean

help:
	@echo "make setup     install Debian packages (root) and npm dependencies"
	@echo "make demo      set up, build, and boot examples/hello.xml on this machine (no scheduler)"
	@echo "make test      everything: check, the QEMU suite and the Slurm suite"
	@echo "make check     types, lint, unit tests (fast)"
	@echo "make install   install into DESTDIR/PREFIX (default /usr/local, SYSCONFDIR /etc)"
	@echo "make bench     benchmarks (bench/); make bench-launch: srun in the VMs vs on the host (a Slurm test cluster)"

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages: $$missing (run make setup as root)"; exit 1; fi; \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# Debian bases build in a user namespace mapped to root's subordinate ids, never as real root
	@if [ "$$(id -u)" = 0 ] && ! grep -q '^root:' /etc/subuid 2>/dev/null; then usermod --add-subuids 700000000-700065535 --add-subgids 700000000-700065535 root; fi
	@# libvirtd's QEMU driver will not start without its default user, which libvirt-daemon-system
	@# (not installed: it brings systemd as init) would make, in group kvm; vse's domains name their own user
	@if [ "$$(id -u)" = 0 ] && ! getent passwd libvirt-qemu >/dev/null; then groupadd -f --system libvirt-qemu && \
	  useradd --system -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin -c 'Libvirt Qemu' libvirt-qemu; fi
	@if [ "$$(id -u)" = 0 ] && ! id -nG libvirt-qemu 2>/dev/null | grep -qw kvm; then groupadd -f --system kvm && usermod -aG kvm libvirt-qemu; fi
	@# the guest kernel is fetched with apt at first use: its package lists must know it
	@apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq; }

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

setup: deps node_modules/.package-lock.json

# dist/: tsc's modules, and dist/bundle/ the programs bundled, with code caches for the launchers'
# node (.ci/bundle.js). build/bin/: launchers; node reads them as CommonJS, as the installed vse.
build: node_modules/.package-lock.json
	node_modules/.bin/tsc -p tsconfig.build.json
	$(NODE) .ci/bundle.js
	$(MAKE) -C spank-bridge
	$(MAKE) build/guest/vse-task build/guest/dropbear build/host/vse-userns
	@mkdir -p build/bin
	@echo '{"type":"commonjs"}' > build/bin/package.json
	@for p in vse prolog epilog; do ./.ci/launcher "$(NODE)" "$(CURDIR)/dist" $$p > build/bin/$$p; chmod 755 build/bin/$$p; done

# vse-task runs inside every guest: static, so it needs nothing of the guest's libraries
build/guest/vse-task: lib/guest/task.c
	@mkdir -p build/guest
	gcc -static -Os -Wall -Wextra -Werror -o $@ $<
	strip $@

# the minimal guest's SSH server: Debian's dropbear source, built static (the script says why)
build/guest/dropbear: lib/guest/build-dropbear.sh
	@mkdir -p build/guest
	lib/guest/build-dropbear.sh build/guest

# runs virtiofsd as the job's user, capabilities confined to a user namespace (lib/deploy/shares.ts)
build/host/vse-userns: lib/deploy/userns.c
	@mkdir -p build/host
	gcc -Os -Wall -Wextra -Werror -o $@ $<

typecheck: node_modules/.package-lock.json
	node_modules/.bin/tsc --noEmit -p .

lint: node_modules/.package-lock.json
	node_modules/.bin/eslint .

unit: node_modules/.package-lock.json build/guest/vse-task build/guest/dropbear
	$(VITEST) run --project unit

spank-test:
	$(MAKE) -C spank-bridge test

check: typecheck lint unit spank-test

# The QEMU and Slurm suites run commands as an unprivileged user: from an install they can read.
test-prefix: build
	rm -rf $(TEST_PREFIX)
	$(MAKE) install PREFIX=$(TEST_PREFIX) SYSCONFDIR=$(TEST_PREFIX)/etc DESTDIR=

test-qemu: test-prefix
	VSE_PREFIX=$(TEST_PREFIX) $(VITEST) run --project qemu

test-slurm: test-prefix
	VSE_PREFIX=$(TEST_PREFIX) $(VITEST) run --project slurm

# One short run of each benchmark: they keep working (their figures come from `make bench`).
bench-smoke: build
	node dist/bench/deploy.js --runs 1 --vms 2 --rounds 1 --json
	node dist/bench/resolve.js --runs 1 --json
	node dist/bench/create.js --runs 1 --json

test-install: build
	test/install/install.sh

test: setup build
	$(MAKE) check
	$(MAKE) test-install
	$(MAKE) test-qemu
	$(MAKE) test-slurm
	$(MAKE) bench-smoke
	@echo "all suites passed"

install: build
	install -d -m 755 $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/vse $(DESTDIR)$(SPANKDIR) \
		$(DESTDIR)$(SYSCONFDIR)/vse $(DESTDIR)$(SYSCONFDIR)/slurm/plugstack.conf.d $(DESTDIR)$(PREFIX)/share/doc/vse
	rm -rf $(DESTDIR)$(PREFIX)/lib/vse/dist $(DESTDIR)$(PREFIX)/lib/vse/config
	cp -r dist config package.json package-lock.json $(DESTDIR)$(PREFIX)/lib/vse/
	install -D -m 644 lib/configure/init.sh $(DESTDIR)$(PREFIX)/lib/vse/lib/configure/init.sh
	install -D -m 644 lib/guest/setup.sh $(DESTDIR)$(PREFIX)/lib/vse/lib/guest/setup.sh
	install -D -m 755 build/guest/vse-task $(DESTDIR)$(PREFIX)/lib/vse/build/guest/vse-task
	install -D -m 755 build/guest/dropbear $(DESTDIR)$(PREFIX)/lib/vse/build/guest/dropbear
	install -D -m 755 build/guest/dropbearkey $(DESTDIR)$(PREFIX)/lib/vse/build/guest/dropbearkey
	install -D -m 755 build/host/vse-userns $(DESTDIR)$(PREFIX)/lib/vse/build/host/vse-userns
	cd $(DESTDIR)$(PREFIX)/lib/vse && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error
	printf '{"prefix":"%s","sysconfdir":"%s"}\n' "$(PREFIX)" "$(SYSCONFDIR)" > $(DESTDIR)$(PREFIX)/lib/vse/install.json
	./.ci/launcher "$(NODE)" "$(PREFIX)/lib/vse/dist" vse > $(DESTDIR)$(PREFIX)/bin/vse
	./.ci/launcher "$(NODE)" "$(PREFIX)/lib/vse/dist" prolog > $(DESTDIR)$(PREFIX)/lib/vse/prolog
	./.ci/launcher "$(NODE)" "$(PREFIX)/lib/vse/dist" epilog > $(DESTDIR)$(PREFIX)/lib/vse/epilog
	chmod 755 $(DESTDIR)$(PREFIX)/bin/vse $(DESTDIR)$(PREFIX)/lib/vse/prolog $(DESTDIR)$(PREFIX)/lib/vse/epilog
	install -m 755 spank-bridge/build/vse.so $(DESTDIR)$(SPANKDIR)/vse.so
	printf '# vse: --vse=FILE for sbatch, salloc and srun (docs/admin.md)\nrequired %s/vse.so vse=%s/bin/vse\n' \
		"$(SPANKDIR)" "$(PREFIX)" > $(DESTDIR)$(SYSCONFDIR)/slurm/plugstack.conf.d/vse.conf
	[ -e $(DESTDIR)$(SYSCONFDIR)/vse/site.json ] || install -m 644 config/site.json $(DESTDIR)$(SYSCONFDIR)/vse/site.json
	install -m 644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/vse/
	@echo "installed vse into $(DESTDIR)$(PREFIX); slurm.conf lines: docs/admin.md"

demo: setup build
	build/bin/vse run examples/hello.xml
	build/bin/vse run -q examples/hello.xml --all -- sh -c 'echo "hello from $$(hostname) ($$(uname -sr)); my peers: $$(grep -o "[^ ]*-vm-[0-9]*$$" /etc/hosts | sort -u | tr "\n" " ")"'

bench: build
	node dist/bench/deploy.js
	node dist/bench/resolve.js
	node dist/bench/create.js
	$(MAKE) bench-launch

# starts the Slurm test cluster (test/slurm/cluster.sh) on vse installed in TEST_PREFIX, then stops it
bench-launch: test-prefix
	VSE_PREFIX=$(TEST_PREFIX) node dist/bench/launch.js

# Generated from lib/descriptor/schema-source.ts and checked in: the JSON Schema for users and
# editors, and ajv's standalone validator (vse validate then neither loads nor compiles ajv).
schema: build
	node dist/lib/descriptor/schema-gen.js config/schema/description.schema.json lib/descriptor/schema-check.ts
	node_modules/.bin/tsc -p tsconfig.build.json

clean:
	rm -rf dist build
	$(MAKE) -C spank-bridge clean
