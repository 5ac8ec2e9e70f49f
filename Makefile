# kemu — make demo: see it work; make test: every test. Both install what a fresh Debian 12 lacks.
SWIFT       ?= swift
# What kemu needs from Debian: libnl for netlink, iproute2 for the reference scripts, python3 and
# curl for the demo's sample server and client.
APT_PACKAGES := libnl-3-dev libnl-route-3-dev libnftables-dev nftables zlib1g-dev pkg-config iproute2 python3 python3-venv curl tcpdump
# What make bench adds: the load generators and HAProxy, the peer the node proxy is measured against.
BENCH_PACKAGES := iperf3 wrk haproxy
# The python kubernetes client the API tests drive (major version N is for Kubernetes 1.N).
PY_CLIENT := kubernetes==32.0.1
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps bench-deps apt-install build check release test unit bench bench-scale demo clean fuzz

deps:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(APT_PACKAGES)"
	@.venv/bin/python -c 'import kubernetes' 2>/dev/null || { \
	    echo "deps: installing python $(PY_CLIENT) into .venv"; \
	    /usr/bin/python3 -m venv .venv && .venv/bin/pip install -q --disable-pip-version-check '$(PY_CLIENT)'; }

bench-deps: deps
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(BENCH_PACKAGES)"

# Installs the Debian packages in PACKAGES that are missing, and only those.
apt-install:
	@missing=$$(for p in $(PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "deps: installing" $$missing; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

build: deps
	$(SWIFT) build --build-tests

# kemu's own warnings are errors here (dependencies' are not); every import edge must be one
# docs/architecture.md allows.
check: deps
	KEMU_STRICT=1 $(SWIFT) build --build-tests
	scripts/check-architecture.py

release: deps
	$(SWIFT) build -c release --product kemu
	$(SWIFT) build -c release --product kemu-echo
	$(SWIFT) build -c release --product kemu-bench

# Unit tests need no root; the root suites (real namespaces and packets) run when uid is 0.
test: build
	scripts/check-architecture.py
	scripts/test.sh
	scripts/fuzz.sh 10

# Every decoder of outside input under libFuzzer, FUZZ_SECONDS each (make test runs 10 s each);
# after the debug build, whose package modules the tunnels' frame decoder links.
FUZZ_SECONDS ?= 300
fuzz: build
	scripts/fuzz.sh $(FUZZ_SECONDS)

unit: build
	scripts/test.sh --skip KemuRootTests

bench: bench-deps release
	$(SUDO) .build/release/kemu-bench

# Issue 18's scale run: NODES nodes, a Deployment of PODS kemu/echo pods, minutes long.
NODES ?= 100
PODS  ?= 1000
bench-scale: bench-deps release
	$(SUDO) .build/release/kemu-bench scale --nodes $(NODES) --pods $(PODS)

demo: deps
	$(SWIFT) build --product kemu
	$(SWIFT) build --product kemu-echo
	$(SUDO) scripts/demo.sh .build/debug/kemu

clean:
	rm -rf .build
