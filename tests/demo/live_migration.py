#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The live migration of `make demo`: QEMU moves a running Linux guest from one bochs-display to
the other.

    live_migration.py [--stop-copy-only] --kernel BZIMAGE --initrd INITRD --out DIR SRC_BDF DST_BDF

Runs in the test guest (L1, tests/vm/demo-guest.sh), where both devices are bound to
qemu-vfio-pci. The source L2 QEMU (TCG) boots BZIMAGE (the L1 kernel itself) with INITRD, whose
/init is the painter (tests/demo/painter.c): it draws a tile every 250 ms on the device it finds, shows
the tick in a banner, prints `tick N` on its serial port and every 8 ticks reads back all it drew
and prints `verify N ok (K tiles)` or `VERIFY FAIL ...`. The source assigns SRC_BDF, the
destination DST_BDF and waits with `-incoming defer`; both use `-device vfio-pci` over iommufd
with `migration-events=on` and otherwise QEMU's migration defaults (enable-migration=auto, the
default downtime limit); capabilities `events`, `return-path` and `switchover-ack` are on.

While the guest draws, the source migrates. Every half second a line shows the migration status
(query-migrate), the device states as the driver has them (debugfs vfio/<dev>/migration/state),
what is left of the device's PRE_COPY data as QEMU last read it from the driver
(VFIO_MIG_GET_PRECOPY_INFO: initial and dirty bytes, from QEMU's trace events), the dirty data
sent so far (read beyond the initial data) and the bytes moved; QEMU's VFIO_MIGRATION and
MIGRATION events are printed as they come.

Pictures come from the outer QEMU (L0): `req.NAME` in DIR/mailbox asks tests/demo/l0_watcher.py
on the host for a screendump of a device into DIR/NAME.png. They are the device model's view,
independent of the driver under test.

Checks: no migration blocker with the defaults; the migration completes and the destination
runs; the VFIO_MIGRATION sequences of both QEMUs; the serial ticks continue on the destination
without a gap; the destination verifies (every tile, drawn on either side, and the mode) and no
VERIFY FAIL; in L0's pictures every tile on A after the switchover is on B, pixel for pixel.
Writes DIR/results.json, DIR/summary.txt (one line), the serial logs, QEMU stderr and traces,
and DIR/side-by-side.png (A before and after the switchover, B after it and later). Exit status 0
if every check passed.

--stop-copy-only is for a driver loaded with pre_copy=0 (`make demo DEMO_STOP_COPY_ONLY=1`):
the same guest and checks, but the source's states have no PRE_COPY, and QEMU is told a
switchover bandwidth (avail-switchover-bandwidth 64 MiB/s): all of VRAM moves in the downtime, and
with its own bandwidth estimate QEMU would not switch over (tests/qemu/qemu_migration_test.py). So
it switches over once less than 19.2 MiB (64 MiB/s for its default 300 ms) is left: RAM converged.

Only the Python standard library.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "qemu"))
sys.path.insert(0, HERE)
from qemu_migration_test import Qmp, QemuProcess  # noqa: E402 - shared with the qtest test
import png  # noqa: E402

QEMU = os.environ.get("QVP_QEMU", "qemu-system-x86_64")
# Debugging this script on a host without the driver: emulated devices, and the pictures from the
# L2 QEMUs themselves (QVP_DEMO_EMULATED=1; the VFIO checks then fail).
EMULATED = bool(os.environ.get("QVP_DEMO_EMULATED"))
# What QEMU 10.0.2 reports for a PRE_COPY device (tests/qemu/qemu_migration_test.py).
SRC_STATES = ["running-p2p", "running", "pre-copy", "pre-copy-p2p", "stop-copy", "stop"]
SRC_STATES_STOP_COPY_ONLY = ["running-p2p", "running", "running-p2p", "stop", "stop-copy", "stop"]
DST_STATES = ["resuming", "running-p2p", "running"]
# The painter's layout (tests/demo/painter.c).
BANNER_H, TILE_W, TILE_H, COLS, ROWS = 48, 40, 36, 16, 12
COLOUR_BG = bytes((0x20, 0x20, 0x20))

T0 = time.monotonic()
print_lock = threading.Lock()


def say(msg=""):
    with print_lock:
        print(f"[{time.monotonic() - T0:6.1f}] {msg}" if msg else "", flush=True)


def mib(n):
    if n is None:
        return "-"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


class Follow:
    """The growing text of a file (a serial log, a trace), read incrementally."""

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.text = ""
        self.partial = ""

    def new_lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return []
        self.pos += len(data)
        chunk = data.decode(errors="replace").replace("\r", "")
        self.text += chunk
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()
        return lines


def ticks(text):
    return [int(n) for n in re.findall(r"(?m)^tick (\d+)$", text)]


def verifies(text):
    return re.findall(r"(?m)^(verify (\d+) ok \((\d+) tiles\))$", text)


class Trace:
    """QEMU's trace events (-D FILE): the device's PRE_COPY bytes as QEMU last read them from the
    driver, and the bytes QEMU read from (source) or wrote to (destination) the data fd."""

    def __init__(self, path):
        self.follow = Follow(path)
        self.initial = self.dirty = self.stopcopy = None
        # initial_bytes when PRE_COPY began: QEMU lowers its copy by what it reads, so the sum of
        # the two is constant while initial data is left.
        self.initial_total = None
        self.read_precopy = self.read_stopcopy = self.loaded = 0
        self.in_stopcopy = False

    def update(self):
        for line in self.follow.new_lines():
            m = re.search(r"(vfio_state_pending_estimate|vfio_state_pending_exact|vfio_save_iterate) "
                          r".*?(?:stopcopy size (\d+) )?precopy initial size (\d+) "
                          r"precopy dirty size (\d+)", line)
            if m:
                if m.group(2) is not None:
                    self.stopcopy = int(m.group(2))
                self.initial, self.dirty = int(m.group(3)), int(m.group(4))
                if self.initial_total is None and self.initial > 0:
                    self.initial_total = self.initial + self.read_precopy
                continue
            m = re.search(r"vfio_save_block .* data_size (\d+)", line)
            if m:
                if self.in_stopcopy:
                    self.read_stopcopy += int(m.group(1))
                else:
                    self.read_precopy += int(m.group(1))
                continue
            if "vfio_save_complete_precopy_start" in line:
                self.in_stopcopy = True
                continue
            m = re.search(r"vfio_load_state_device_data .* size (\d+) ret 0", line)
            if m:
                self.loaded += int(m.group(1))

    def dirty_sent(self):
        """Bytes read in PRE_COPY beyond the initial data: pages the guest wrote again."""
        if self.initial_total is None:
            return None
        return max(0, self.read_precopy - self.initial_total)


def qemu_argv(name, bdf, scratch, kernel, initrd, extra):
    """Both command lines come from here: they differ only in the name (files) and host=.

    TCG inside TCG: translating is the dearest part, and the L2 kernel's boot generates about
    70 MB of code (measured with `info jit` under host TCG), so tb-size=128 never flushes it.
    -cpu qemu64: the painter needs no CPU feature, and under host TCG the kernel reached /init
    sooner with it than with max (4.4 s against 5.3 s). kmemleak=off: half the boot time."""
    dev = f"vfio-pci,id=gpu0,host={bdf},addr=0x3,iommufd=iommufd0,rombar=0,migration-events=on"
    backend = ["-object", "iommufd,id=iommufd0"]
    if EMULATED:
        dev, backend = "bochs-display,id=gpu0,addr=0x3,vgamem=16M", []
    trace = ["vfio_state_pending_estimate", "vfio_state_pending_exact", "vfio_save_iterate",
             "vfio_save_block", "vfio_save_complete_precopy_start", "vfio_load_state_device_data"]
    argv = [QEMU, "-name", name, "-machine", "q35", "-accel", "tcg,tb-size=128", "-cpu", "qemu64",
            "-smp", "1", "-m", "256M", "-nodefaults", "-no-user-config", "-display", "none",
            "-vga", "none", "-no-reboot", "-kernel", kernel, "-initrd", initrd,
            "-append", "console=ttyS0 rdinit=/init quiet loglevel=4 panic=-1 kmemleak=off",
            *backend, "-device", dev,
            "-serial", f"file:{scratch}/{name}.serial",
            "-qmp", f"unix:{scratch}/{name}.qmp,server=on,wait=off",
            "-D", f"{scratch}/{name}.trace"]
    for ev in trace:
        argv += ["-trace", f"enable={ev}"]
    return argv + extra


class Vm(QemuProcess):
    def __init__(self, role, name, bdf, scratch, kernel, initrd, extra):
        self.role, self.name, self.bdf = role, name, bdf
        self.quiet = False
        self.argv = qemu_argv(name, bdf, scratch, kernel, initrd, extra)
        self.stderr_path = os.path.join(scratch, f"{name}.stderr")
        self.serial = Follow(os.path.join(scratch, f"{name}.serial"))
        self.trace = Trace(os.path.join(scratch, f"{name}.trace"))
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=self.stderr)
        try:
            self.qmp = Qmp(name, os.path.join(scratch, f"{name}.qmp"), self.proc, self.on_event)
        except Exception as e:
            self.proc.kill()
            self.proc.wait()
            self.stderr.close()
            raise RuntimeError(f"{name} QEMU: {e}\n{self.stderr_text()}") from e

    def on_event(self, ev):
        if self.quiet:
            return
        data = ev.get("data", {})
        if ev["event"] == "VFIO_MIGRATION":
            say(f"  {self.role} {self.bdf}: VFIO_MIGRATION device-state {data.get('device-state')}")
        elif ev["event"] == "MIGRATION":
            say(f"  {self.role} QEMU: MIGRATION status {data.get('status')}")


def driver_state(bdf):
    """The device's migration state as the driver reports it (vfio debugfs), or '?'."""
    try:
        with open(f"/sys/kernel/debug/vfio/{bdf}/migration/state") as f:
            return f.read().strip()
    except OSError:
        return "?"


def driver_features(bdf):
    try:
        with open(f"/sys/kernel/debug/vfio/{bdf}/migration/features") as f:
            return " ".join(f.read().split())
    except OSError:
        return "?"


class Pictures:
    """Screendumps by the outer QEMU, through the mailbox that tests/demo/l0_watcher.py serves."""

    def __init__(self, out):
        self.out = out
        self.mailbox = os.path.join(out, "mailbox")
        self.taken = {}
        self.broken = None
        self.direct = None  # {bdf: Vm} when EMULATED

    def take(self, name, bdf, timeout=30):
        if self.broken:
            return None
        if self.direct:
            path = os.path.join(self.out, name + ".png")
            self.direct[bdf].qmp.cmd("screendump", filename=path, device="gpu0", format="png")
            self.taken[name] = path
            say(f"  picture {name}: L2 screendump of {bdf} -> {os.path.relpath(path, REPO)}")
            return path
        req = os.path.join(self.mailbox, "req." + name)
        done = os.path.join(self.mailbox, "done." + name)
        try:
            with open(req + ".tmp", "w") as f:
                f.write(bdf + "\n")
            os.rename(req + ".tmp", req)
        except OSError as e:
            self.broken = f"cannot write {req}: {e}"
            say(f"  picture {name}: {self.broken}")
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "done." + name in os.listdir(self.mailbox):
                with open(done) as f:
                    answer = f.read().split()
                if answer and answer[0] == "ok":
                    path = os.path.join(self.out, name + ".png")
                    self.taken[name] = path
                    say(f"  picture {name}: L0 screendump of {answer[1]} ({bdf}) -> "
                        f"{os.path.relpath(path, REPO)}")
                    return path
                say(f"  picture {name}: {' '.join(answer)}")
                return None
            time.sleep(0.05)
        self.broken = f"no answer from the L0 watcher in {timeout} s"
        say(f"  picture {name}: {self.broken}")
        return None


def tile(image, slot):
    x0, y0 = slot % COLS * TILE_W, BANNER_H + slot // COLS * TILE_H
    return png.crop(image, x0, y0, TILE_W, TILE_H)[2]


def painted_slots(image):
    """Slots whose centre is not the background."""
    w = image[0]
    out = []
    for slot in range(COLS * ROWS):
        x = slot % COLS * TILE_W + TILE_W // 2
        y = BANNER_H + slot // COLS * TILE_H + TILE_H // 2
        if image[2][(y * w + x) * 3:(y * w + x) * 3 + 3] != COLOUR_BG:
            out.append(slot)
    return out


def compare_pictures(a_path, b_path):
    """(ok, text): every tile painted on A is on B, pixel for pixel, and B has more."""
    a, b = png.read(a_path), png.read(b_path)
    if a[:2] != (640, 480) or b[:2] != (640, 480):
        return False, f"pictures are {a[0]}x{a[1]} and {b[0]}x{b[1]}, not 640x480"
    on_a = painted_slots(a)
    same = [s for s in on_a if tile(a, s) == tile(b, s)]
    on_b = painted_slots(b)
    ok = len(on_a) > 0 and len(same) == len(on_a) and len(on_b) > len(on_a)
    return ok, (f"{len(same)} of the {len(on_a)} tiles on A after the switchover are on B, "
                f"pixel for pixel; B has {len(on_b)} tiles")


SIDE_BY_SIDE = ["1-before-A", "2-after-A", "2-after-B", "3-later-B"]


def compose(path, taken, src, dst, q):
    """A before and after the switchover in the top row, B after the switchover and later in
    the bottom row, with captions."""
    before_a, after_a, after_b, later_b = (png.read(taken[n]) for n in SIDE_BY_SIDE)
    n = [len(painted_slots(i)) for i in (before_a, after_a, after_b, later_b)]
    rows = [
        [(before_a, [f"A {src}, the source, before the migration",
                     f"the guest draws on A: {n[0]} tiles"]),
         (after_a, ["A after the switchover",
                    f"the source is stopped: {n[1]} tiles"])],
        [(after_b, [f"B {dst}, the destination, after the switchover",
                    f"the guest runs on B: {n[2]} tiles"]),
         (later_b, ["B later", f"the guest goes on drawing on B: {n[3]} tiles"])],
    ]
    png.write(path, png.grid(
        rows, title=f"QEMU live-migrates a Linux guest from A to B through qemu-vfio-pci: downtime "
                    f"{q.get('downtime')} ms, vfio {q.get('vfio', {}).get('transferred')} bytes"))


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ticks-before", type=int, default=16,
                    help="ticks the source draws before the migration starts")
    ap.add_argument("--stop-copy-only", action="store_true",
                    help="the driver was loaded with pre_copy=0: expect no PRE_COPY, and let "
                    "QEMU switch over at its first chance")
    ap.add_argument("src")
    ap.add_argument("dst")
    args = ap.parse_args(argv[1:])
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "mailbox"), exist_ok=True)
    pics = Pictures(out)
    results = {"source": args.src, "destination": args.dst}
    checks = []

    def check(ok, what):
        checks.append((bool(ok), what))
        say(f"  {'ok  ' if ok else 'FAIL'} {what}")
        return ok

    if not EMULATED and not os.path.isdir("/sys/kernel/debug/vfio"):
        subprocess.run(["mount", "-t", "debugfs", "debugfs", "/sys/kernel/debug"], check=False)
    for role, bdf in (("A", args.src), ("B", args.dst)):
        try:
            driver = os.path.basename(os.readlink(f"/sys/bus/pci/devices/{bdf}/driver"))
        except OSError:
            driver = "none"
        say(f"{role} = {bdf}: driver {driver}, migration features (debugfs): "
            f"{driver_features(bdf)}, state {driver_state(bdf)}")
    say(subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[0])

    scratch = tempfile.mkdtemp(prefix="qvp-demo-", dir="/dev/shm")
    mig_uri = f"unix:{scratch}/mig.sock"
    vms = []
    ok = False
    error = None
    try:
        say("starting the destination QEMU (device B, -incoming defer) and the source QEMU "
            "(device A, -S)")
        dst = Vm("destination", "dst", args.dst, scratch, args.kernel, args.initrd,
                 ["-incoming", "defer"])
        vms.append(dst)
        src = Vm("source", "src", args.src, scratch, args.kernel, args.initrd, ["-S"])
        vms.append(src)
        if EMULATED:
            pics.direct = {args.src: src, args.dst: dst}
        say(f"  source: {' '.join(src.argv)}")
        say("  (the destination's differs in -name, the file names, host= and -incoming defer "
            "for -S)")
        caps = [{"capability": c, "state": True} for c in ("events", "return-path", "switchover-ack")]
        for vm in (dst, src):
            vm.qmp.cmd("migrate-set-capabilities", capabilities=caps)
        dst.qmp.cmd("migrate-incoming", uri=mig_uri)
        em = "n/a" if EMULATED else src.qmp.cmd("qom-get", path="/machine/peripheral/gpu0",
                                                  property="enable-migration")
        blocked = src.qmp.cmd("query-migrate").get("blocked-reasons")
        params = src.qmp.cmd("query-migrate-parameters")
        results["defaults"] = {"enable-migration": em, "blocked-reasons": blocked,
                               "downtime-limit": params.get("downtime-limit"),
                               "max-bandwidth": params.get("max-bandwidth")}
        check(em == "auto" and not blocked,
              f"QEMU's defaults: enable-migration={em}, migration blocker: {blocked or 'none'}, "
              f"downtime-limit {params.get('downtime-limit')} ms (not set), capabilities events, "
              f"return-path, switchover-ack")
        if args.stop_copy_only:
            src.qmp.cmd("migrate-set-parameters",
                        **{"avail-switchover-bandwidth": 64 << 20})
            say("  STOP_COPY only: avail-switchover-bandwidth 64 MiB/s (QEMU switches over once "
                "less than 19.2 MiB is left; all of VRAM moves in the downtime)")
        src.qmp.cmd("cont")
        say("source running: Linux boots in L2 under nested TCG (2.5 to 3.5 minutes on 2 cores), "
            "then the painter starts")

        # 1. The guest boots and draws.
        boot_start = time.monotonic()
        last_note = boot_start
        while True:
            for line in src.serial.new_lines():
                if line.startswith("painter:") or "verify" in line.lower():
                    say(f"  source serial: {line}")
            t = ticks(src.serial.text)
            if len(t) > args.ticks_before and verifies(src.serial.text):
                break
            if src.proc.poll() is not None:
                raise RuntimeError(f"the source QEMU exited ({src.proc.returncode}):\n"
                                   f"{src.stderr_text()}\n{src.serial.text[-2000:]}")
            if "VERIFY FAIL" in src.serial.text:
                raise RuntimeError("the painter failed before the migration")
            now = time.monotonic()
            if now - boot_start > 600:
                raise RuntimeError("the painter did not draw within 600 s:\n" + src.serial.text[-2000:])
            if now - last_note >= 20:
                say(f"  ... {now - boot_start:.0f} s, source serial {len(src.serial.text)} bytes")
                last_note = now
            time.sleep(0.5)
        results["boot_s"] = round(time.monotonic() - boot_start, 1)
        say(f"the painter draws on A: tick {ticks(src.serial.text)[-1]} "
            f"({results['boot_s']} s after cont)")
        pics.take("1-before-A", args.src)
        pics.take("1-before-B", args.dst)

        # 2. Migrate while it draws.
        mode = "STOP_COPY only" if args.stop_copy_only else "QEMU's defaults"
        say(f"migrate: source -> destination over {mig_uri} ({mode})")
        latest = {"info": {}}
        done = threading.Event()

        def poll_migration():
            while not done.is_set():
                try:
                    info = src.qmp.cmd("query-migrate", timeout=300)
                except Exception as e:  # noqa: BLE001
                    latest["error"] = str(e)
                    done.set()
                    return
                latest["info"] = info
                if info.get("status") in ("completed", "failed", "cancelled"):
                    done.set()
                    return
                time.sleep(0.5)

        mig_start = time.monotonic()
        src.qmp.cmd("migrate", uri=mig_uri)
        poller = threading.Thread(target=poll_migration, daemon=True)
        poller.start()
        states = {}
        while True:
            finished = done.wait(0.5)
            src.trace.update()
            dst.trace.update()
            info = latest["info"]
            st = {r: driver_state(b) for r, b in (("A", args.src), ("B", args.dst))}
            for r in st:
                if states.get(r) != st[r]:
                    say(f"  driver: {r} {states.get(r, '-')} -> {st[r]}")
            states = st
            ram = info.get("ram", {})
            tr = src.trace
            if tr.in_stopcopy:
                device = f"STOP_COPY read {mib(tr.read_stopcopy)}"
            elif tr.initial is not None:
                device = (f"PRE_COPY left {mib(tr.initial + tr.dirty)} (initial "
                          f"{mib(tr.initial)}, dirty {mib(tr.dirty)}), dirty sent "
                          f"{mib(tr.dirty_sent())}")
            else:
                device = "PRE_COPY left -"
            say(f"{time.monotonic() - mig_start:5.1f} s {info.get('status', '-'):9} "
                f"A {st['A']:12} B {st['B']:9} | {device} | vfio sent "
                f"{mib(info.get('vfio', {}).get('transferred', 0))}, B loaded "
                f"{mib(dst.trace.loaded)} | RAM left {mib(ram.get('remaining'))}")
            if finished:
                break
            if time.monotonic() - mig_start > 600:
                say("the migration did not end in 600 s: cancelling")
                src.qmp.cmd("migrate_cancel")
        poller.join(5)
        info = latest["info"]
        if latest.get("error"):
            raise RuntimeError(f"query-migrate: {latest['error']}")
        results["query-migrate"] = info
        completed = info.get("status") == "completed"
        ram, vfio = info.get("ram", {}), info.get("vfio", {})
        results["pre_copy_read"] = src.trace.read_precopy
        results["stop_copy_read"] = src.trace.read_stopcopy
        results["destination_loaded"] = dst.trace.loaded
        results["pre_copy_initial"] = src.trace.initial_total
        results["pre_copy_dirty_sent"] = src.trace.dirty_sent()

        # 3. After the switchover.
        dst_status = None
        if completed:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                dst_status = dst.qmp.cmd("query-status")["status"]
                if dst_status == "running":
                    break
                time.sleep(0.2)
        pics.take("2-after-A", args.src)
        pics.take("2-after-B", args.dst)
        check(completed and dst_status == "running",
              f"migration {info.get('status')}: downtime {info.get('downtime')} ms, total time "
              f"{info.get('total-time')} ms (setup {info.get('setup-time')} ms); destination "
              f"{dst_status}" + (f"; error: {info.get('error-desc')}" if info.get("error-desc") else ""))
        say(f"  bytes (query-migrate): vfio.transferred {vfio.get('transferred')}, ram.transferred "
            f"{ram.get('transferred')} (all of the main channel, the device's data included), "
            f"precopy-bytes {ram.get('precopy-bytes')}, downtime-bytes {ram.get('downtime-bytes')}")
        say(f"  device data (QEMU's trace events): read from A {src.trace.read_precopy} bytes in "
            f"PRE_COPY ({src.trace.initial_total} initial bytes, all of VRAM, then "
            f"{src.trace.dirty_sent()} bytes of pages the guest wrote again) and "
            f"{src.trace.read_stopcopy} bytes in STOP_COPY, with the VM stopped; written to B "
            f"{dst.trace.loaded} bytes")

        # The destination carries on: wait for two more verifications there.
        if completed:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                for line in dst.serial.new_lines():
                    if "verify" in line.lower():
                        say(f"  destination serial: {line}")
                if len(verifies(dst.serial.text)) >= 2 or "VERIFY FAIL" in dst.serial.text:
                    break
                if dst.proc.poll() is not None:
                    break
                time.sleep(0.5)
        pics.take("3-later-B", args.dst)
        src.serial.new_lines()
        dst.serial.new_lines()

        # 4. Checks.
        got_src, got_dst = src.qmp.vfio_states(), dst.qmp.vfio_states()
        results["vfio_migration_events"] = {"source": got_src, "destination": got_dst}
        want_src = SRC_STATES_STOP_COPY_ONLY if args.stop_copy_only else SRC_STATES
        check(got_src == want_src, f"source VFIO_MIGRATION: {' '.join(got_src)}")
        check(got_dst == DST_STATES, f"destination VFIO_MIGRATION: {' '.join(got_dst)}")
        src_ticks = ticks(src.serial.text)
        both = ticks(src.serial.text + dst.serial.text)
        last_src = src_ticks[-1] if src_ticks else None
        first_dst = both[len(src_ticks)] if len(both) > len(src_ticks) else None
        gapless = bool(both) and both == list(range(both[0], both[-1] + 1))
        results.update(last_source_tick=last_src, first_destination_tick=first_dst,
                       last_destination_tick=both[-1] if both else None)
        check(gapless and first_dst is not None and first_dst == last_src + 1,
              f"serial: the source's last tick is {last_src}, the destination carries on at tick "
              f"{first_dst} (up to {both[-1] if both else None}, "
              f"{'no gap' if gapless else 'NOT consecutive'})")
        dst_ver = [v for v in verifies(dst.serial.text) if int(v[1]) > (last_src or 0)]
        fails = [ln for ln in (src.serial.text + dst.serial.text).splitlines() if "VERIFY FAIL" in ln]
        results["destination_verify"] = [v[0] for v in dst_ver]
        results["verify_fail"] = fails
        check(dst_ver and not fails,
              "destination: " + (", ".join(v[0] for v in dst_ver) or "no verify line")
              + ("; " + "; ".join(fails) if fails else "; no VERIFY FAIL"))
        if "2-after-A" in pics.taken and "3-later-B" in pics.taken:
            pok, ptext = compare_pictures(pics.taken["2-after-A"], pics.taken["3-later-B"])
            results["pictures_compare"] = ptext
            check(pok, f"L0 pictures: {ptext}")
        else:
            check(False, f"L0 pictures: missing ({pics.broken or 'see above'})")
        ok = all(c for c, _ in checks)
    except Exception as e:  # noqa: BLE001 - reported, then the exit status
        say(f"ERROR: {e}")
        error = str(e).splitlines()[0] if str(e) else type(e).__name__
        ok = False
    finally:
        for vm in reversed(vms):
            vm.quiet = True  # quitting changes the device states again: not part of the story
            vm.stop()
        for vm in vms:
            for suffix in ("serial", "stderr", "trace"):
                try:
                    shutil.copy(os.path.join(scratch, f"{vm.name}.{suffix}"),
                                os.path.join(out, f"{vm.name}.{suffix}"))
                except OSError:
                    pass
        shutil.rmtree(scratch, ignore_errors=True)

    # 5. The side-by-side picture and the files.
    side = None
    if all(n in pics.taken for n in SIDE_BY_SIDE):
        try:
            side = os.path.join(out, "side-by-side.png")
            compose(side, pics.taken, args.src, args.dst, results.get("query-migrate", {}))
        except Exception as e:  # noqa: BLE001
            say(f"side-by-side picture: {e}")
            side = None
    results["pictures"] = {n: os.path.relpath(p, REPO) for n, p in pics.taken.items()}
    results["checks"] = [{"ok": c, "what": w} for c, w in checks]
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    rel = os.path.relpath(out, REPO)
    say(f"files in {rel}/: " + " ".join(sorted(os.path.basename(p) for p in pics.taken.values()))
        + (" side-by-side.png" if side else "") + ", src/dst .serial .stderr .trace, results.json")
    if side:
        say(f"side by side: {os.path.relpath(side, REPO)}")
    q = results.get("query-migrate", {})
    if ok:
        how = ("STOP_COPY only" if args.stop_copy_only else "its defaults")
        line = (f"QEMU live-migrated the running guest from {args.src} to {args.dst} with "
                f"{how} (downtime {q.get('downtime')} ms, total {q.get('total-time')} ms, vfio "
                f"{q.get('vfio', {}).get('transferred')} bytes); the source stopped at tick "
                f"{results.get('last_source_tick')}, the destination carried on from tick "
                f"{results.get('first_destination_tick')} and verified "
                f"{len(results.get('destination_verify', []))} times")
    else:
        failed = [w for c, w in checks if not c] + ([error] if error else [])
        line = f"the live migration from {args.src} to {args.dst} failed: " + "; ".join(failed)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(line + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
