#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""QEMU-driven live migration of a bochs-display bound to qemu-vfio-pci (KTAP).

    qemu_migration_test.py SRC_BDF DST_BDF [OTHER_BDF...]
    qemu_migration_test.py --stop-copy-only SRC_BDF DST_BDF

The other devices serve the failure paths (one with another VRAM size) and the two-device
migration (two more of the same size as the first); without them those cases are skipped,
with the reason.

Runs inside the test guest (L1), where the devices are bound to qemu-vfio-pci. Two L2 QEMUs
(QEMU 10.0.2, TCG, no guest OS: the firmware is a `cli; hlt` loop) each assign one device with
`-device vfio-pci,host=BDF,iommufd=...,migration-events=on`; the destination waits with
`-incoming defer`. QEMU's migration defaults are kept (enable-migration=auto, the default
downtime limit, no capabilities but `events`), so the device's PRE_COPY is what makes the
migration converge.

There is no guest code: this program is the guest. Through QEMU's qtest protocol (`-qtest`,
which works with TCG even though Debian's QEMU has no qtest accelerator) it programs the device's
BARs through 0xcf8/0xcfc, fills all of VRAM (BAR0) with random data, sets the DISPI mode
registers (BAR2 + 0x500) and keeps writing random pages and registers while the migration runs,
keeping a shadow of what it wrote. Writes stop as soon as the source's switchover is seen (the
source's VFIO_MIGRATION `pre-copy-p2p`/`stop-copy`/`stop` or its STOP event); the one write that
was in flight then may have landed before or after the switchover, and both outcomes are
accepted for that one page or register (the count is printed). After completion every byte of
the destination's VRAM and its mode registers must equal the shadow.

Checks (KTAP): no migration blocker; the migration completes; writes landed during PRE_COPY;
the source's and the destination's VFIO_MIGRATION device-state sequences; destination VRAM and
mode registers equal what the source last wrote.

Then the failure paths, on a new source with `return-path` and `switchover-ack` on both sides,
written to all along: a destination whose device has another VRAM size (the migration fails
before the switchover, the source device goes back to RUNNING); `migrate_cancel` in PRE_COPY;
the destination killed with SIGKILL in PRE_COPY; the source still running and written; then a
migration into a fresh destination that completes, with the downtime limit raised to 60 s so
that only switchover-ack holds the switchover back until the initial data is sent (QEMU's
`vfio_save_iterate` trace), and a destination VRAM equal to everything written.

Last, two devices in one VM migrate together into two in another (QEMU then uses the P2P
states), with QEMU's defaults; both devices' VRAM and modes must arrive.

With --stop-copy-only (the driver loaded with pre_copy=0, tests/guest-tests.sh) only the main
scenario runs, with QEMU told a switchover bandwidth (avail-switchover-bandwidth,
QVP_STOP_COPY_ONLY_BANDWIDTH bytes/s, default 64 MiB/s) so that it switches over at all, and the
source's states without PRE_COPY; its
downtime, total time and bytes are printed beside those the PRE_COPY run left in QVP_QEMU_FIGURES.

Only the Python standard library is used. QVP_QEMU (default qemu-system-x86_64) selects the
binary; QVP_QEMU_KEEP=1 keeps the scratch directory (QEMU stderr, qtest/QMP sockets).
"""

import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

QEMU = os.environ.get("QVP_QEMU", "qemu-system-x86_64")
SLOT = 3  # the device's slot on the L2 machine's root bus, the same on both sides
BAR0 = 0xE0000000  # VRAM
BAR2 = 0xF0000000  # MMIO: DISPI registers at 0x500
DISPI = 0x500
# DISPI indices the test writes and checks: XRES, YRES, BPP, ENABLE, BANK, VIRT_WIDTH,
# VIRT_HEIGHT, X_OFFSET, Y_OFFSET. ID (0) and VIDEO_MEMORY_64K (0xa) are checked read-only.
MODE_REGS = list(range(1, 10))
DISPI_ID5 = 0xB0C5
PAGE = 4096
WRITE_INTERVAL = float(os.environ.get("QVP_WRITE_INTERVAL", "0.02"))
# If the migration has not completed after this long, the writer stops (and the migration check
# fails: it did not converge while the device was being written).
CONVERGE_SECONDS = float(os.environ.get("QVP_CONVERGE_SECONDS", "300"))
# The STOP_COPY-only run's avail-switchover-bandwidth (bytes/s); see main_scenario().
STOP_COPY_ONLY_BANDWIDTH = int(os.environ.get("QVP_STOP_COPY_ONLY_BANDWIDTH", str(64 << 20)))
# Where the PRE_COPY run leaves its figures for the STOP_COPY-only run to compare with.
FIGURES = os.environ.get("QVP_QEMU_FIGURES", "/tmp/qvp-qemu-figures.json")

# What QEMU 10.0.2 reports (hw/vfio/migration.c; ../shared/notes/qemu-end-to-end.md §2.4):
# the source's `cont` (RUNNING_P2P, RUNNING), save_setup (PRE_COPY), vm_stop's P2P prepare
# (PRE_COPY_P2P), complete_precopy (STOP_COPY), save_cleanup (STOP); the destination's
# load_setup (RESUMING, the kernel's RUNNING -> STOP -> RESUMING is one request), then vm_start
# in the incoming bottom half (RUNNING_P2P, RUNNING).
SRC_STATES = ["running-p2p", "running", "pre-copy", "pre-copy-p2p", "stop-copy", "stop"]
DST_STATES = ["resuming", "running-p2p", "running"]
# With no PRE_COPY: vm_stop's P2P prepare (RUNNING_P2P) and its state change (STOP), then
# complete_precopy (STOP_COPY) and save_cleanup (STOP); seen with QEMU 10.0.2.
SRC_STATES_STOP_COPY_ONLY = ["running-p2p", "running", "running-p2p", "stop", "stop-copy", "stop"]
SWITCHOVER_STATES = {"pre-copy-p2p", "stop-copy", "stop"}


class Ktap:
    def __init__(self, plan):
        self.plan = plan
        self.n = 0
        self.failed = 0
        self.reported = set()
        print("TAP version 13")
        print(f"1..{plan}", flush=True)

    def diag(self, msg):
        for line in str(msg).splitlines() or [""]:
            print(f"# {line}", flush=True)

    def result(self, ok, name, detail=None):
        self.n += 1
        self.reported.add(name)
        if detail:
            self.diag(detail)
        if not ok:
            self.failed += 1
        print(f"{'ok' if ok else 'not ok'} {self.n} {name}", flush=True)
        return ok

    def skip(self, name, reason):
        self.n += 1
        self.reported.add(name)
        print(f"ok {self.n} {name} # SKIP {reason}", flush=True)

    def fail_missing(self, names, reason):
        """Reports each of `names` that has no result yet as failed, with `reason`."""
        for name in names:
            if name not in self.reported:
                self.result(False, name, reason)


MAIN_TESTS = [
    "qemus_start",
    "no_migration_blocker",
    "migration_completes",
    "writes_during_pre_copy",
    "source_vfio_migration_events",
    "destination_vfio_migration_events",
    "destination_vram_equals_source",
    "destination_mode_registers",
]
# Failure paths, with return-path and switchover-ack on both sides (a new source QEMU).
FAILURE_TESTS = [
    "other_vram_size_fails_before_switchover",
    "migrate_cancel_in_pre_copy",
    "destination_killed_in_pre_copy",
    "source_running_after_failures",
    "switchover_waits_for_initial_data",
    "migration_after_failures_completes",
    "destination_vram_equals_source_after_failures",
]
# Two devices in one VM, into two in another (the multi-device path: P2P states).
TWO_DEVICE_TESTS = [
    "two_devices_migrate_together",
    "two_devices_p2p_states",
    "two_devices_vram_and_registers",
]
TEST_NAMES = MAIN_TESTS + FAILURE_TESTS + TWO_DEVICE_TESTS
# --stop-copy-only: the main scenario again, with the driver loaded with pre_copy=0.
STOP_COPY_ONLY_TESTS = [
    "stop_copy_only_qemus_start",
    "stop_copy_only_no_migration_blocker",
    "stop_copy_only_migration_completes",
    "stop_copy_only_writes_during_migration",
    "stop_copy_only_source_vfio_migration_events",
    "stop_copy_only_destination_vfio_migration_events",
    "stop_copy_only_destination_vram_equals_source",
    "stop_copy_only_destination_mode_registers",
]


def connect_unix(path, proc, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"QEMU exited with status {proc.returncode} before {path} appeared")
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Qmp:
    """A QMP client: a reader thread files events (with the time they arrived) and replies."""

    def __init__(self, name, path, proc, on_event=None):
        self.name = name
        self.sock = connect_unix(path, proc)
        self.file = self.sock.makefile("rb")
        self.events = []
        self.replies = []
        self.cond = threading.Condition()
        self.on_event = on_event
        self.closed = False
        greeting = json.loads(self.file.readline())
        assert "QMP" in greeting, greeting
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()
        self.cmd("qmp_capabilities")

    def _reader(self):
        try:
            for line in self.file:
                msg = json.loads(line)
                with self.cond:
                    if "event" in msg:
                        self.events.append((time.monotonic(), msg))
                        if self.on_event:
                            self.on_event(msg)
                    else:
                        self.replies.append(msg)
                    self.cond.notify_all()
        except (OSError, ValueError):
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def cmd(self, execute, timeout=120, **arguments):
        """Runs a command, returns its `return`; raises on `error`. QMP is served under the BQL,
        which the switchover holds for the whole downtime: timeouts are generous."""
        msg = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        with self.cond:
            self.replies.clear()
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
            deadline = time.monotonic() + timeout
            while not self.replies:
                if self.closed:
                    raise RuntimeError(f"{self.name}: QMP closed during {execute}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name}: no reply to {execute} in {timeout} s")
                self.cond.wait(left)
            reply = self.replies.pop(0)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {execute}: {reply['error'].get('desc')}")
        return reply.get("return")

    def wait_event(self, pred, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for _, ev in self.events:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self.cond.wait(min(left, 1))

    def vfio_states(self, device_id="gpu0"):
        with self.cond:
            return [ev["data"]["device-state"] for _, ev in self.events
                    if ev["event"] == "VFIO_MIGRATION" and ev["data"].get("device-id") == device_id]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Qtest:
    """The qtest protocol: one command a line, one `OK ...` (or FAIL/ERR) line back."""

    def __init__(self, path, proc):
        self.sock = connect_unix(path, proc)
        self.file = self.sock.makefile("rb")
        self.lock = threading.Lock()

    def cmd(self, line):
        with self.lock:
            self.sock.sendall(line.encode() + b"\n")
            while True:
                reply = self.file.readline()
                if not reply:
                    raise RuntimeError(f"qtest: connection closed during {line[:40]}")
                reply = reply.decode().rstrip("\n")
                if reply.startswith("IRQ"):
                    continue
                if not reply.startswith("OK"):
                    raise RuntimeError(f"qtest: {line[:60]}: {reply[:200]}")
                return reply[3:]

    def outl(self, port, val):
        self.cmd(f"outl 0x{port:x} 0x{val:x}")

    def inl(self, port):
        return int(self.cmd(f"inl 0x{port:x}"), 0)

    def cfg_addr(self, reg, slot):
        return 0x80000000 | (slot << 11) | reg

    def cfg_read(self, reg, slot=SLOT):
        self.outl(0xCF8, self.cfg_addr(reg & ~3, slot))
        return self.inl(0xCFC)

    def cfg_write(self, reg, val, slot=SLOT):
        self.outl(0xCF8, self.cfg_addr(reg & ~3, slot))
        self.outl(0xCFC, val)

    def readw(self, addr):
        return int(self.cmd(f"readw 0x{addr:x}"), 0)

    def writew(self, addr, val):
        self.cmd(f"writew 0x{addr:x} 0x{val:x}")

    def write(self, addr, data):
        self.cmd(f"b64write 0x{addr:x} 0x{len(data):x} {base64.b64encode(data).decode()}")

    def read(self, addr, size):
        return base64.b64decode(self.cmd(f"b64read 0x{addr:x} 0x{size:x}"))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def hlt_bios(path):
    """64 KiB of firmware whose reset vector (offset 0xfff0) is `cli; hlt; jmp .-1`."""
    rom = bytearray(65536)
    rom[0xFFF0:0xFFF4] = b"\xfa\xf4\xeb\xfd"
    with open(path, "wb") as f:
        f.write(rom)


class QemuProcess:
    """What a started QEMU has: `proc`, its QMP client `qmp`, and its stdout and stderr in the
    file `stderr` (opened for writing) at `stderr_path`. Also used by tests/demo."""

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        """Asks QEMU to quit (QMP `quit`), kills it if it has not exited after 30 s, closes the
        QMP connection and the stderr file."""
        if self.proc.poll() is None:
            try:
                self.qmp.cmd("quit", timeout=20)
            except Exception:  # noqa: BLE001 - best effort, then kill
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.qmp.close()
        self.stderr.close()


class Vm(QemuProcess):
    def __init__(self, name, bdf, scratch, bios, extra, on_event=None):
        """`bdf` is one device (gpu0 at SLOT) or a list of them (gpu0, gpu1, ... from SLOT on)."""
        self.name = name
        self.bdf = bdf
        bdfs = bdf if isinstance(bdf, list) else [bdf]
        qmp_path = os.path.join(scratch, f"{name}.qmp")
        qtest_path = os.path.join(scratch, f"{name}.qtest")
        self.stderr_path = os.path.join(scratch, f"{name}.stderr")
        devs = []
        if os.environ.get("QVP_QEMU_EMULATED"):
            # Debugging the protocol on a host without the driver: an emulated device.
            backend = []
            for i, _ in enumerate(bdfs):
                devs += ["-device", f"bochs-display,id=gpu{i},addr=0x{SLOT + i:x},vgamem=16M"]
        else:
            backend = ["-object", "iommufd,id=iommufd0"]
            for i, b in enumerate(bdfs):
                devs += ["-device", f"vfio-pci,id=gpu{i},host={b},addr=0x{SLOT + i:x},"
                         "iommufd=iommufd0,rombar=0,migration-events=on"]
        # Both command lines come from here: everything but host= (and -S/-incoming) is equal.
        argv = [QEMU, "-name", name, "-machine", "q35", "-accel", "tcg,tb-size=16",
                "-smp", "1", "-m", "64M", "-nodefaults", "-no-user-config", "-display", "none",
                "-bios", bios] + backend + devs + [
                "-qmp", f"unix:{qmp_path},server=on,wait=off",
                "-qtest", f"unix:{qtest_path},server=on,wait=off", "-qtest-log", "none"] + extra
        self.argv = argv
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=self.stderr)
        self.qmp = Qmp(name, qmp_path, self.proc, on_event)
        self.qtest = Qtest(qtest_path, self.proc)

    def stop(self):
        super().stop()
        self.qtest.close()


def setup_device(qt, slot=SLOT, bar0=BAR0, bar2=BAR2):
    """Programs BAR0/BAR2 and PCI_COMMAND.MEMORY (no firmware did); returns the VRAM size."""
    ids = qt.cfg_read(0, slot)
    if ids != 0x11111234:
        raise RuntimeError(f"slot {slot}: vendor/device 0x{ids:08x}, not a bochs-display")
    qt.cfg_write(0x10, 0xFFFFFFFF, slot)
    size = (~(qt.cfg_read(0x10, slot) & ~0xF) & 0xFFFFFFFF) + 1
    qt.cfg_write(0x10, bar0, slot)
    qt.cfg_write(0x18, bar2, slot)
    cmd = qt.cfg_read(0x04, slot) & 0xFFFF
    qt.cfg_write(0x04, cmd | 0x2, slot)
    if qt.cfg_read(0x10, slot) & ~0xF != bar0 or qt.readw(bar2 + DISPI) != DISPI_ID5:
        raise RuntimeError(f"slot {slot}: BAR programming did not take: BAR0 "
                           f"0x{qt.cfg_read(0x10, slot):08x}, DISPI ID 0x{qt.readw(bar2 + DISPI):04x}")
    return size


def random_mode(rng):
    x, y = rng.choice([(640, 480), (800, 600), (1024, 768), (1280, 720)])
    return {1: x, 2: y, 3: 32, 4: 0x41, 5: 0, 6: x, 7: y, 8: rng.randrange(0, 64), 9: rng.randrange(0, 64)}


class Writer(threading.Thread):
    """Writes random VRAM pages (and now and then the mode registers) through the source's
    qtest socket until one of `stops` is set, keeping the shadow. The write whose reply came after
    a stop event was set is kept apart (`ambiguous`): it may have landed after the switchover."""

    def __init__(self, qt, shadow, regs, rng, stops, precopy):
        super().__init__(daemon=True)
        self.qt, self.shadow, self.regs, self.rng = qt, shadow, regs, rng
        self.stops, self.precopy = stops, precopy
        self.ambiguous = None
        self.writes = 0
        self.during_precopy = 0
        self.error = None

    def run(self):
        pages = len(self.shadow) // PAGE
        try:
            while not self.stopped():
                in_precopy = self.precopy.is_set()
                if self.writes % 16 == 15:
                    idx = self.rng.choice(MODE_REGS)
                    val = random_mode(self.rng)[idx] if idx != 4 else 0x41
                    val ^= self.rng.randrange(0, 2) * 0x100 if idx in (8, 9) else 0
                    op = ("reg", idx, self.regs[idx], val)
                    self.qt.writew(BAR2 + DISPI + 2 * idx, val)
                else:
                    p = self.rng.randrange(pages)
                    data = self.rng.randbytes(PAGE)
                    op = ("page", p, bytes(self.shadow[p * PAGE:(p + 1) * PAGE]), data)
                    self.qt.write(BAR0 + p * PAGE, data)
                if self.stopped():
                    self.ambiguous = op
                    break
                self.apply(op)
                self.writes += 1
                if in_precopy and self.precopy.is_set():
                    self.during_precopy += 1
                # A guest that keeps drawing, not one that saturates the link: at most
                # 1 / WRITE_INTERVAL writes a second.
                time.sleep(WRITE_INTERVAL)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def stopped(self):
        return any(e.is_set() for e in self.stops)

    def apply(self, op):
        kind, where, _, new = op
        if kind == "reg":
            self.regs[where] = new
        else:
            self.shadow[where * PAGE:(where + 1) * PAGE] = new


def read_vram(qt, size, chunk=1 << 20):
    out = bytearray()
    for off in range(0, size, chunk):
        out += qt.read(BAR0 + off, min(chunk, size - off))
    return out


def compare_vram(got, shadow, ambiguous):
    """Pages of `got` that differ from `shadow`; the ambiguous write's page may hold either."""
    bad = []
    for p in range(len(shadow) // PAGE):
        g = got[p * PAGE:(p + 1) * PAGE]
        if g == shadow[p * PAGE:(p + 1) * PAGE]:
            continue
        if ambiguous and ambiguous[0] == "page" and ambiguous[1] == p and g == ambiguous[3]:
            continue
        bad.append(p)
    return bad


def query_status(qmp):
    return qmp.cmd("query-status")["status"]


def progress(info):
    ram, vfio = info.get("ram", {}), info.get("vfio", {})
    return (f"status {info.get('status')}, total-time {info.get('total-time')} ms, "
            f"expected-downtime {info.get('expected-downtime')} ms, ram.transferred "
            f"{ram.get('transferred')}, ram.remaining {ram.get('remaining')}, "
            f"dirty-sync-count {ram.get('dirty-sync-count')}, mbps {ram.get('mbps')}, "
            f"vfio.transferred {vfio.get('transferred')}")


def wait_migration(t, qmp, timeout, give_up):
    """Polls query-migrate until the migration ends, printing progress every 15 s; after
    CONVERGE_SECONDS sets `give_up` (the writer stops) and says so."""
    start = time.monotonic()
    last = start
    while True:
        info = qmp.cmd("query-migrate", timeout=120)
        if info.get("status") in ("completed", "failed", "cancelled"):
            return info
        now = time.monotonic()
        if now - start > timeout:
            return info
        if now - last >= 15:
            t.diag(f"after {now - start:.0f} s: {progress(info)}")
            last = now
        if now - start > CONVERGE_SECONDS and not give_up.is_set():
            t.diag(f"not converged after {CONVERGE_SECONDS:.0f} s of writes: the writer stops")
            give_up.set()
        time.sleep(0.5)


def bar0_size(bdf):
    try:
        return os.stat(f"/sys/bus/pci/devices/{bdf}/resource0").st_size
    except OSError:
        return None


def new_states(qmp, since, device_id="gpu0"):
    with qmp.cond:
        return [ev["data"]["device-state"] for _, ev in qmp.events[since:]
                if ev["event"] == "VFIO_MIGRATION" and ev["data"].get("device-id") == device_id]


def wait_state(qmp, since, state, timeout, device_id="gpu0"):
    """Waits until the VFIO_MIGRATION events after the first `since` include `state`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state in new_states(qmp, since, device_id):
            return True
        qmp.wait_event(lambda ev: ev["event"] == "VFIO_MIGRATION", 1)
    return False


def iterate_traces(text):
    """(initial, dirty) of each `vfio_save_iterate` trace line of QEMU's log backend."""
    out = []
    for m in re.finditer(r"vfio_save_iterate\b.*?precopy initial size (\w+) precopy dirty size (\w+)",
                         text):
        out.append((int(m.group(1), 0), int(m.group(2), 0)))
    return out


def stop_all(t, vms, drop=None):
    """Stops `vms` (the last started first) and prints each one's stderr but the lines `drop`
    matches."""
    for vm in reversed(vms):
        vm.stop()
    for vm in vms:
        lines = vm.stderr_text().splitlines()
        err = "\n".join(line for line in lines if not (drop and drop(line))).strip()
        if err:
            t.diag(f"{vm.name} stderr (exit {vm.proc.returncode}):\n{err}")


FIGURE_KEYS = ("downtime", "total-time", "setup-time")


def figures(info):
    out = {k: info.get(k) for k in FIGURE_KEYS}
    out["vfio"] = info.get("vfio", {}).get("transferred")
    return out


def save_figures(t, info):
    """Leaves the PRE_COPY migration's figures in FIGURES for the --stop-copy-only run."""
    if info.get("status") != "completed":
        return
    try:
        with open(FIGURES, "w") as f:
            json.dump(figures(info), f)
    except OSError as e:
        t.diag(f"figures not saved: {FIGURES}: {e}")


def compare_figures(t, info):
    """Prints the STOP_COPY-only migration's figures next to the PRE_COPY run's (FIGURES)."""
    try:
        with open(FIGURES) as f:
            pre = json.load(f)
    except (OSError, ValueError) as e:
        t.diag(f"no PRE_COPY figures to compare with ({FIGURES}: {e})")
        return
    stop = figures(info)
    t.diag("same guest workload, same build; PRE_COPY (QEMU's defaults) against STOP_COPY only "
           f"(avail-switchover-bandwidth {STOP_COPY_ONLY_BANDWIDTH >> 20} MiB/s):")
    for k in FIGURE_KEYS + ("vfio",):
        unit = " B" if k == "vfio" else " ms"
        t.diag(f"  {k:<10} {pre.get(k)!s:>10}{unit}  {stop.get(k)!s:>10}{unit}")


def failure_paths(t, bdfs, scratch, bios, rng):
    """A source QEMU with return-path and switchover-ack (on every destination too) is written
    to all along while (a) a destination with another VRAM size refuses the stream, (b) a
    migration is cancelled in PRE_COPY, (c) the destination is killed in PRE_COPY, then (d) it
    migrates into a fresh destination, whose VRAM must then equal everything written. For (d)
    the downtime limit is raised to 60 s, so that only switchover-ack holds the switchover back:
    the source's last `vfio_save_iterate` (QEMU's trace) must show no initial data left."""
    caps = [{"capability": c, "state": True} for c in ("events", "return-path", "switchover-ack")]
    switchover = threading.Event()

    def src_event(ev):
        # Only a real switchover stops the writer; failed and cancelled attempts do not.
        if ev["event"] == "STOP" or (ev["event"] == "VFIO_MIGRATION" and
                                     ev["data"].get("device-state") in SWITCHOVER_STATES):
            switchover.set()

    vms = []

    def dst_vm(name, bdf):
        vm = Vm(name, bdf, scratch, bios, ["-incoming", "defer"])
        vms.append(vm)
        vm.uri = f"unix:{os.path.join(scratch, name + '.mig')}"
        vm.qmp.cmd("migrate-set-capabilities", capabilities=caps)
        vm.qmp.cmd("migrate-incoming", uri=vm.uri)
        return vm

    def attempt(dst, name):
        """Runs one migration to its end; returns (query-migrate, source states of it)."""
        since = len(src.qmp.events)
        src.qmp.cmd("migrate", uri=dst.uri)
        info = wait_migration(t, src.qmp, 300, threading.Event())
        # The source's notifiers (device back to RUNNING) run in the migration's cleanup.
        src.qmp.wait_event(lambda ev: False, 2)
        states = new_states(src.qmp, since)
        t.diag(f"{name}: {progress(info)}" + (f", error: {info['error-desc']}"
                                               if info.get("error-desc") else ""))
        t.diag(f"{name}: source VFIO_MIGRATION {' '.join(states)}")
        return info, states

    def held_in_pre_copy(dst, name, action):
        """Starts a migration and holds it in PRE_COPY: as soon as the source's device is in
        PRE_COPY the destination QEMU is stopped (SIGSTOP), so it neither reads the stream nor
        sends the switchover ack. Runs `action` there and waits for the end; returns (whether
        the source was still migrating in PRE_COPY when `action` ran, query-migrate, source
        states)."""
        since = len(src.qmp.events)
        src.qmp.cmd("migrate", uri=dst.uri)
        seen = wait_state(src.qmp, since, "pre-copy", 120)
        os.kill(dst.proc.pid, signal.SIGSTOP)
        time.sleep(2)
        status = src.qmp.cmd("query-migrate").get("status")
        held = seen and status == "active" and not \
            SWITCHOVER_STATES & set(new_states(src.qmp, since))
        t.diag(f"{name}: source {status} in {' '.join(new_states(src.qmp, since))} "
               "with the destination stopped")
        action()
        info = wait_migration(t, src.qmp, 120, threading.Event())
        src.qmp.wait_event(lambda ev: False, 2)
        states = new_states(src.qmp, since)
        if dst.proc.poll() is None:
            os.kill(dst.proc.pid, signal.SIGCONT)
        t.diag(f"{name}: {progress(info)}" + (f", error: {info['error-desc']}"
                                               if info.get("error-desc") else ""))
        return held, info, states

    src = None
    writer = None
    try:
        src = Vm("src2", bdfs[0], scratch, bios, ["-S", "-trace", "vfio_save_iterate"],
                 on_event=src_event)
        vms.append(src)
        src.qmp.cmd("migrate-set-capabilities", capabilities=caps)
        size = setup_device(src.qtest)
        src.qmp.cmd("cont")
        shadow = bytearray(rng.randbytes(size))
        for off in range(0, size, 1 << 20):
            src.qtest.write(BAR0 + off, bytes(shadow[off:off + (1 << 20)]))
        regs = random_mode(rng)
        for idx in MODE_REGS:
            src.qtest.writew(BAR2 + DISPI + 2 * idx, regs[idx])
        precopy = threading.Event()
        writer = Writer(src.qtest, shadow, regs, rng, (switchover,), precopy)
        writer.start()

        # (a) A destination whose VRAM has another size.
        other = [b for b in bdfs[2:] if bar0_size(b) not in (None, size)]
        if not other:
            t.skip(FAILURE_TESTS[0], "no device with another VRAM size")
        else:
            dst = dst_vm("dst-small", other[0])
            info, states = attempt(dst, f"into {other[0]} ({bar0_size(other[0]) >> 20} MiB)")
            ok = (info.get("status") == "failed" and "stop-copy" not in states
                  and states[-1:] == ["running"])
            t.result(ok, FAILURE_TESTS[0], f"{other[0]}: status {info.get('status')}; "
                     f"source states {' '.join(states)} (expected: failed, no stop-copy, "
                     "ending in running)")
            dst.stop()

        # (b) Cancelled in PRE_COPY.
        dst = dst_vm("dst-cancel", bdfs[1])
        seen, info, states = held_in_pre_copy(dst, "cancel", lambda: src.qmp.cmd("migrate_cancel"))
        # QEMU ends a cancelled migration `cancelled`, or `failed` when its write into the
        # socket that migrate_cancel shut down reports the error first (seen: "Unable to write
        # to socket: Broken pipe"); either way the device must be back in RUNNING.
        ok = (seen and info.get("status") in ("cancelled", "failed") and "stop-copy" not in states
              and states[-1:] == ["running"])
        t.result(ok, FAILURE_TESTS[1], f"status {info.get('status')}; source states "
                 f"{' '.join(states)} (expected: cancelled or failed, pre-copy ... running)")
        dst.stop()

        # (c) The destination killed (SIGKILL) in PRE_COPY.
        dst = dst_vm("dst-killed", bdfs[1])

        def kill():
            dst.proc.kill()
            dst.proc.wait()

        seen, info, states = held_in_pre_copy(dst, "killed", kill)
        ok = (seen and info.get("status") == "failed" and "stop-copy" not in states
              and states[-1:] == ["running"])
        t.result(ok, FAILURE_TESTS[2], f"status {info.get('status')}; source states "
                 f"{' '.join(states)} (expected: failed, pre-copy ... running)")
        dst.stop()

        # The source still runs, its device RUNNING and still being written.
        status = query_status(src.qmp)
        before = writer.writes
        time.sleep(2)
        ok = status == "running" and src.qmp.vfio_states()[-1:] == ["running"] and \
            writer.writes > before and writer.error is None
        t.result(ok, FAILURE_TESTS[3], f"source {status}, device {src.qmp.vfio_states()[-1:]}, "
                 f"{writer.writes - before} writes in 2 s"
                 + (f", writer error: {writer.error}" if writer.error else ""))

        # (d) Migratable again, into a fresh destination; only switchover-ack holds it back.
        dst = dst_vm("dst-final", bdfs[1])
        src.qmp.cmd("migrate-set-parameters", **{"downtime-limit": 60000})
        traces_before = len(iterate_traces(src.stderr_text()))
        info, states = attempt(dst, "final")
        switchover.set()
        writer.join(60)
        traces = iterate_traces(src.stderr_text())[traces_before:]
        t.result(bool(traces) and traces[-1][0] == 0, FAILURE_TESTS[4],
                 f"{len(traces)} vfio_save_iterate calls; initial bytes left after the first "
                 f"{traces[0][0] if traces else '-'}, after the last {traces[-1][0] if traces else '-'} "
                 f"(dirty {traces[-1][1] if traces else '-'})")
        done = info.get("status") == "completed"
        t.result(done and states == SRC_STATES[2:], FAILURE_TESTS[5],
                 f"status {info.get('status')}, downtime {info.get('downtime')} ms, source states "
                 f"{' '.join(states)}; {writer.writes} writes in all")
        if done:
            got = read_vram(dst.qtest, size)
            bad = compare_vram(got, shadow, writer.ambiguous)
            regs_bad = [i for i in MODE_REGS if dst.qtest.readw(BAR2 + DISPI + 2 * i) != regs[i]
                        and not (writer.ambiguous and writer.ambiguous[:2] == ("reg", i))]
            t.result(not bad and not regs_bad, FAILURE_TESTS[6],
                     f"{len(bad)} of {size // PAGE} pages differ; registers differing: {regs_bad}")
    except Exception as e:  # noqa: BLE001
        t.diag(f"failure paths: {e!r}")
    finally:
        if writer:
            switchover.set()
            writer.join(60)
        # The trace lines were counted above.
        stop_all(t, vms, drop=lambda line: "vfio_save_iterate" in line)
        t.fail_missing(FAILURE_TESTS, "the failure-path scenario broke off")


def two_devices(t, bdfs, scratch, bios, rng):
    """One VM with two devices (gpu0, gpu1) migrates into one with two others, with QEMU's
    defaults; both devices' VRAM and modes must arrive, and both must pass through the P2P
    states (QEMU uses them with more than one device)."""
    same = [b for b in bdfs if bar0_size(b) == bar0_size(bdfs[0])]
    if len(same) < 4:
        for name in TWO_DEVICE_TESTS:
            t.skip(name, f"needs four devices of one VRAM size, {len(same)} bound")
        return
    vms = []
    try:
        dst = Vm("dst-two", [same[1], same[3]], scratch, bios, ["-incoming", "defer"])
        vms.append(dst)
        src = Vm("src-two", [same[0], same[2]], scratch, bios, ["-S"])
        vms.append(src)
        uri = f"unix:{os.path.join(scratch, 'two.mig')}"
        for vm in (dst, src):
            vm.qmp.cmd("migrate-set-capabilities",
                       capabilities=[{"capability": "events", "state": True}])
        dst.qmp.cmd("migrate-incoming", uri=uri)
        bars = [(SLOT, BAR0, BAR2), (SLOT + 1, BAR0 + 0x2000000, BAR2 + 0x1000)]
        sizes = [setup_device(src.qtest, *b) for b in bars]
        src.qmp.cmd("cont")
        shadows, modes = [], []
        for (slot, bar0, bar2), size in zip(bars, sizes):
            shadow = rng.randbytes(size)
            for off in range(0, size, 1 << 20):
                src.qtest.write(bar0 + off, shadow[off:off + (1 << 20)])
            regs = random_mode(rng)
            for idx in MODE_REGS:
                src.qtest.writew(bar2 + DISPI + 2 * idx, regs[idx])
            shadows.append(shadow)
            modes.append(regs)
        src.qmp.cmd("migrate", uri=uri)
        info = wait_migration(t, src.qmp, 600, threading.Event())
        src.qmp.wait_event(lambda ev: False, 2)
        done = info.get("status") == "completed"
        t.result(done, TWO_DEVICE_TESTS[0],
                 f"{progress(info)}, downtime {info.get('downtime')} ms"
                 + (f", error: {info['error-desc']}" if info.get("error-desc") else ""))
        want_dst = ["resuming", "running-p2p", "running"]
        got = {f"src gpu{i}": src.qmp.vfio_states(f"gpu{i}") for i in range(2)}
        got.update({f"dst gpu{i}": dst.qmp.vfio_states(f"gpu{i}") for i in range(2)})
        ok = all(got[f"src gpu{i}"] == SRC_STATES for i in range(2)) and \
            all(got[f"dst gpu{i}"] == want_dst for i in range(2))
        t.result(ok, TWO_DEVICE_TESTS[1], "\n".join(f"{k}: {' '.join(v)}" for k, v in got.items()))
        if done:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and query_status(dst.qmp) != "running":
                time.sleep(0.5)
            bad = []
            for i, ((slot, bar0, bar2), size) in enumerate(zip(bars, sizes)):
                got_vram = bytearray()
                for off in range(0, size, 1 << 20):
                    got_vram += dst.qtest.read(bar0 + off, min(1 << 20, size - off))
                pages = compare_vram(got_vram, shadows[i], None)
                if pages:
                    bad.append(f"gpu{i}: {len(pages)} pages differ")
                regs = [x for x in MODE_REGS
                        if dst.qtest.readw(bar2 + DISPI + 2 * x) != modes[i][x]]
                if regs:
                    bad.append(f"gpu{i}: registers {regs} differ")
            t.result(not bad, TWO_DEVICE_TESTS[2], "; ".join(bad) if bad else
                     f"both devices' {sizes[0] >> 20} MiB of VRAM and modes arrived")
    except Exception as e:  # noqa: BLE001
        t.diag(f"two devices: {e!r}")
    finally:
        stop_all(t, vms)
        t.fail_missing(TWO_DEVICE_TESTS, "the two-device scenario broke off")


def main_scenario(t, names, src_bdf, dst_bdf, scratch, bios, rng, stop_copy_only=False):
    """The source, written to all along, migrates into the destination with QEMU's defaults
    (`names`: MAIN_TESTS). With `stop_copy_only` the driver was loaded with pre_copy=0, and the
    downtime limit is raised (`names`: STOP_COPY_ONLY_TESTS). Returns the last query-migrate."""
    src_states = SRC_STATES_STOP_COPY_ONLY if stop_copy_only else SRC_STATES
    mig_uri = f"unix:{os.path.join(scratch, 'mig.sock')}"
    switchover = threading.Event()
    # Set while the writes count as made during the migration: the device's PRE_COPY, or (with
    # no PRE_COPY) the migration's `active` phase.
    precopy = threading.Event()

    def src_event(ev):
        if ev["event"] == "VFIO_MIGRATION":
            state = ev["data"].get("device-state")
            if state == "pre-copy":
                precopy.set()
            elif state in SWITCHOVER_STATES:
                switchover.set()
        elif ev["event"] == "STOP":
            switchover.set()
        elif ev["event"] == "MIGRATION":
            status = ev["data"]["status"]
            if status == "active" and stop_copy_only:
                precopy.set()
            elif status in ("completed", "failed", "cancelled"):
                switchover.set()

    vms = []
    info = {}
    try:
        # 1. Both QEMUs: the destination first, waiting for migrate-incoming.
        try:
            t0 = time.monotonic()
            dst = Vm("dst", dst_bdf, scratch, bios, ["-incoming", "defer"])
            vms.append(dst)
            src = Vm("src", src_bdf, scratch, bios, ["-S"], on_event=src_event)
            vms.append(src)
            for vm in (dst, src):
                vm.qmp.cmd("migrate-set-capabilities",
                           capabilities=[{"capability": "events", "state": True}])
            dst.qmp.cmd("migrate-incoming", uri=mig_uri)
            size = setup_device(src.qtest)
            src.qmp.cmd("cont")
            started = time.monotonic() - t0
            if query_status(src.qmp) != "running":
                raise RuntimeError(f"source not running after cont: {query_status(src.qmp)}")
            if stop_copy_only:
                # All of VRAM moves in the downtime. QEMU switches over once what is left
                # (the device's MIG_DATA_SIZE and the dirty RAM) fits the downtime limit at its
                # bandwidth estimate, which it takes from what the last iteration sent: with an
                # idle guest that is next to nothing (seen: 0.02 Mbit/s, no switchover in 90 s
                # even with a 10 s limit). Told 64 MiB/s, with its default limit (300 ms) it
                # switches over once less than 19.2 MiB is left, i.e. once RAM has converged as
                # in the PRE_COPY run; the downtime measured is what moving VRAM then costs.
                src.qmp.cmd("migrate-set-parameters",
                            **{"avail-switchover-bandwidth": STOP_COPY_ONLY_BANDWIDTH})
            t.result(True, names[0],
                     f"both QEMUs up in {started:.1f} s; VRAM {size >> 20} MiB at 0x{BAR0:x}, "
                     f"DISPI at 0x{BAR2 + DISPI:x}\nsource: {' '.join(src.argv)}\n"
                     f"destination: {' '.join(dst.argv)}")
        except Exception as e:  # noqa: BLE001
            t.result(False, names[0], f"{e}\n" + "".join(
                f"--- {vm.name} stderr:\n{vm.stderr_text()}" for vm in vms))
            t.fail_missing(names, "the QEMUs did not start")
            return {}

        # The source's initial content: all of VRAM random, a mode.
        t1 = time.monotonic()
        shadow = bytearray(rng.randbytes(size))
        chunk = 1 << 20
        for off in range(0, size, chunk):
            src.qtest.write(BAR0 + off, bytes(shadow[off:off + chunk]))
        regs = random_mode(rng)
        src.qtest.writew(BAR2 + DISPI + 8, 0)  # ENABLE off while the mode changes
        for idx in MODE_REGS:
            src.qtest.writew(BAR2 + DISPI + 2 * idx, regs[idx])
        t.diag(f"source VRAM filled ({size >> 20} MiB random) and mode set in "
               f"{time.monotonic() - t1:.1f} s")
        probe = rng.randrange(size // PAGE)
        if src.qtest.read(BAR0 + probe * PAGE, PAGE) != shadow[probe * PAGE:(probe + 1) * PAGE]:
            t.diag(f"WARNING: source page {probe} does not read back what was written")

        # 2. No blocker with QEMU's defaults.
        info = src.qmp.cmd("query-migrate")
        try:
            em = src.qmp.cmd("qom-get", path="/machine/peripheral/gpu0", property="enable-migration")
        except RuntimeError as e:
            em = str(e)
        blocked = info.get("blocked-reasons")
        t.result(not blocked and em == "auto", names[1],
                 f"enable-migration={em}, blocked-reasons={blocked or 'none'}")

        # 3. Migrate while writing.
        gave_up = threading.Event()
        # The writer stops at the switchover (or when it is given up on).
        writer = Writer(src.qtest, shadow, regs, rng, (switchover, gave_up), precopy)
        writer.start()
        time.sleep(1)
        t2 = time.monotonic()
        mig_error = None
        try:
            src.qmp.cmd("migrate", uri=mig_uri)
            info = wait_migration(t, src.qmp, CONVERGE_SECONDS + 300, gave_up)
        except Exception as e:  # noqa: BLE001
            mig_error = str(e)
            info = {}
        switchover.set()
        writer.join(60)
        if gave_up.is_set():
            mig_error = f"did not converge within {CONVERGE_SECONDS:.0f} s while being written"
        wall = time.monotonic() - t2
        ram = info.get("ram", {})
        vfio = info.get("vfio", {})
        detail = (f"status {info.get('status')}, downtime {info.get('downtime')} ms, "
                  f"total-time {info.get('total-time')} ms, setup-time {info.get('setup-time')} ms, "
                  f"wall {wall:.1f} s\n"
                  f"vfio.transferred {vfio.get('transferred')} bytes, ram.transferred "
                  f"{ram.get('transferred')} bytes, precopy-bytes {ram.get('precopy-bytes')}, "
                  f"downtime-bytes {ram.get('downtime-bytes')}, dirty-sync-count "
                  f"{ram.get('dirty-sync-count')}, mbps {ram.get('mbps')}")
        if mig_error or info.get("error-desc"):
            detail += f"\nerror: {mig_error or info.get('error-desc')}"
        completed = info.get("status") == "completed"
        dst_status = None
        if completed:
            # The destination autostarts (the source was running): wait for it.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                dst_status = query_status(dst.qmp)
                if dst_status == "running":
                    break
                time.sleep(0.5)
            detail += f"\ndestination status {dst_status}"
        if not completed:
            detail += "".join(f"\n--- {vm.name} stderr:\n{vm.stderr_text()}" for vm in vms)
        t.result(completed and dst_status == "running" and not gave_up.is_set(), names[2],
                 detail)

        amb = writer.ambiguous
        t.result(writer.error is None and writer.during_precopy > 0, names[3],
                 f"{writer.writes} writes in all, {writer.during_precopy} while the "
                 f"{'migration was active' if stop_copy_only else 'source device was in PRE_COPY'}"
                 f"; in flight at the switchover: "
                 f"{(amb[0] + ' ' + str(amb[1])) if amb else 'none'}"
                 + (f"\nwriter error: {writer.error}" if writer.error else ""))

        # 4. Device-state sequences.
        got = src.qmp.vfio_states()
        t.result(got == src_states, names[4],
                 f"source VFIO_MIGRATION: {' '.join(got)}\nexpected:            {' '.join(src_states)}")
        got = dst.qmp.vfio_states()
        t.result(got == DST_STATES, names[5],
                 f"destination VFIO_MIGRATION: {' '.join(got)}\nexpected:                 "
                 f"{' '.join(DST_STATES)}")

        # 5. Destination content.
        if completed:
            t3 = time.monotonic()
            try:
                dvram = read_vram(dst.qtest, size)
                bad = compare_vram(dvram, shadow, amb)
                detail = (f"read {size >> 20} MiB from the destination in "
                          f"{time.monotonic() - t3:.1f} s; {len(bad)} of {size // PAGE} pages differ")
                if bad:
                    detail += f" (first: {', '.join(str(p) for p in bad[:16])})"
                t.result(not bad, names[6], detail)
            except Exception as e:  # noqa: BLE001
                t.result(False, names[6], str(e))
            try:
                bad = []
                for idx in MODE_REGS:
                    v = dst.qtest.readw(BAR2 + DISPI + 2 * idx)
                    ok = v == regs[idx] or (amb and amb[0] == "reg" and amb[1] == idx and v == amb[3])
                    if not ok:
                        bad.append(f"index {idx}: 0x{v:x}, expected 0x{regs[idx]:x}")
                ident = dst.qtest.readw(BAR2 + DISPI)
                mem64k = dst.qtest.readw(BAR2 + DISPI + 2 * 0xA)
                if ident != DISPI_ID5:
                    bad.append(f"ID 0x{ident:x}")
                if mem64k != size >> 16:
                    bad.append(f"VIDEO_MEMORY_64K {mem64k}")
                t.result(not bad, names[7],
                         "; ".join(bad) if bad else
                         "DISPI " + " ".join(f"{i}=0x{regs[i]:x}" for i in MODE_REGS))
            except Exception as e:  # noqa: BLE001
                t.result(False, names[7], str(e))
    except Exception as e:  # noqa: BLE001
        t.diag(f"main scenario: {e!r}")
    finally:
        t.fail_missing(names, "the scenario broke off or the migration did not complete")
        stop_all(t, vms)
    return info


def main(argv):
    stop_copy_only = len(argv) > 1 and argv[1] == "--stop-copy-only"
    if stop_copy_only:
        argv = argv[:1] + argv[2:]
    if len(argv) < 3:
        print("usage: qemu_migration_test.py [--stop-copy-only] SRC_BDF DST_BDF [OTHER_BDF...]",
              file=sys.stderr)
        return 2
    src_bdf, dst_bdf = argv[1], argv[2]
    names = STOP_COPY_ONLY_TESTS if stop_copy_only else TEST_NAMES
    t = Ktap(len(names))
    if shutil.which(QEMU) is None:
        t.diag(f"{QEMU} not found")
        t.fail_missing(names, f"no {QEMU}")
        return 1
    t.diag(subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[0])
    t.diag(f"source {src_bdf}, destination {dst_bdf}")
    seed = int(os.environ.get("QVP_SEED", str(int.from_bytes(os.urandom(4), "little"))))
    t.diag(f"seed {seed} (QVP_SEED reproduces the data)")
    rng = random.Random(seed)

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    scratch = tempfile.mkdtemp(prefix="qvp-qemu-", dir=base)
    bios = os.path.join(scratch, "hlt.bin")
    hlt_bios(bios)
    try:
        if stop_copy_only:
            info = main_scenario(t, STOP_COPY_ONLY_TESTS, src_bdf, dst_bdf, scratch, bios, rng,
                                 stop_copy_only=True)
            compare_figures(t, info)
        else:
            info = main_scenario(t, MAIN_TESTS, src_bdf, dst_bdf, scratch, bios, rng)
            save_figures(t, info)
            failure_paths(t, argv[1:], scratch, bios, rng)
            two_devices(t, argv[1:], scratch, bios, rng)
    finally:
        if os.environ.get("QVP_QEMU_KEEP"):
            t.diag(f"scratch kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    t.diag(f"{t.n - t.failed} passed, {t.failed} failed")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
