# SPDX-License-Identifier: GPL-2.0
#
#   make [KDIR=...]        build qemu-vfio-pci.ko against a Rust-enabled, clang-built kernel tree
#   make modules_install   install it where modprobe finds it
#   make demo              boot a QEMU guest with two bochs-display devices bound to the module;
#                          QEMU live-migrates a running Linux guest from one to the other
#   make check             every test: host unit tests, kselftests and KUnit in the guest
#   make bench             migration throughput in the guest (16 MiB and 256 MiB VRAM)
#   make fuzz              the stream fuzzers: decode for 10 M executions, then roundtrip (scripts/fuzz.sh)
#   make clippy / rustfmt / clean
#
# `make demo` and `make check` install what they need first (scripts/setup.sh) and build the test
# kernel once into a cache outside the clone (scripts/build-kernel.sh).

KDIR ?= /lib/modules/$(shell uname -r)/build
LLVM ?= 1
export CONFIG_QEMU_VFIO_PCI ?= m

KBUILD = $(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM)

.PHONY: all modules modules_install clean clippy rustfmt rustfmtcheck demo check setup bench fuzz

all: modules

modules:
	$(KBUILD) modules

modules_install:
	$(KBUILD) modules_install

clean:
	$(KBUILD) clean
	rm -rf tests/host/target tests/host/fuzz/target

clippy:
	$(KBUILD) CLIPPY=1 modules

rustfmt:
	rustfmt --edition 2021 $$(git ls-files 'src/*.rs' 'tests/*.rs')

rustfmtcheck:
	rustfmt --edition 2021 --check $$(git ls-files 'src/*.rs' 'tests/*.rs')

setup:
	scripts/setup.sh

demo:
	scripts/demo.sh

check:
	scripts/check.sh

bench:
	scripts/bench.sh

fuzz:
	scripts/fuzz.sh
