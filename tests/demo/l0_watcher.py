#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Serves screendump requests of the test guest (L1) through the outer QEMU's (L0's) QMP monitor.

    l0_watcher.py QMP_SOCKET MAILBOX_DIR

scripts/demo.sh starts it on the host next to `tests/vm/run --qmp QMP_SOCKET --rwdir ...`, and
stops it by PID when the run returns. MAILBOX_DIR is a host directory the guest can write to
(tests/vm/run --rwdir). The guest asks for a picture by writing `req.NAME` holding the L1
address of a bochs-display (0000:01:00.0) or its L0 device id (qvp_dev1); this program finds
the device's L0 id with `query-pci` (bus numbers as the L1 kernel programmed them), runs
`screendump {filename: <MAILBOX_DIR>/../NAME.png, device: <id>, format: png}`, and then writes
`done.NAME`: `ok <id> <path>` or `error <message>`.

The picture is the device model's own view (its VRAM as its registers describe it), taken
outside the guest and independently of the driver under test. Only the Python standard library.
"""

import json
import os
import socket
import sys
import time


class L0Qmp:
    def __init__(self, path, timeout=600):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.file = self.sock.makefile("rb")
        json.loads(self.file.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, execute, **arguments):
        msg = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError("L0 QMP closed")
            reply = json.loads(line)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(reply["error"].get("desc", str(reply["error"])))
            # an event: ignored


def find_qdev_id(buses, bus, slot, function):
    for b in buses:
        for dev in b.get("devices", []):
            if (dev.get("bus"), dev.get("slot"), dev.get("function")) == (bus, slot, function):
                return dev.get("qdev_id")
            bridge = dev.get("pci_bridge")
            if bridge:
                found = find_qdev_id([{"devices": bridge.get("devices", [])}], bus, slot, function)
                if found:
                    return found
    return None


def resolve(qmp, what):
    """The L0 device id for an L1 PCI address (DDDD:BB:SS.F) or an id given as is."""
    if ":" not in what:
        return what
    _, bus, rest = what.split(":")
    slot, function = rest.split(".")
    qid = find_qdev_id(qmp.cmd("query-pci"), int(bus, 16), int(slot, 16), int(function, 16))
    if not qid:
        raise RuntimeError(f"no L0 device at L1 address {what}")
    return qid


def write_atomic(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def main(argv):
    if len(argv) != 3:
        print("usage: l0_watcher.py QMP_SOCKET MAILBOX_DIR", file=sys.stderr)
        return 2
    sock_path, mailbox = argv[1], os.path.abspath(argv[2])
    outdir = os.path.dirname(mailbox)
    try:
        qmp = L0Qmp(sock_path)
    except OSError as e:
        print(f"[l0-watcher] no QMP at {sock_path}: {e}", file=sys.stderr)
        return 1
    served = set()
    while True:
        try:
            names = sorted(n for n in os.listdir(mailbox) if n.startswith("req."))
        except OSError:
            names = []
        for req in names:
            name = req[4:]
            if name in served or not name or "/" in name:
                continue
            served.add(name)
            try:
                with open(os.path.join(mailbox, req)) as f:
                    what = f.read().strip()
                qid = resolve(qmp, what)
                png = os.path.join(outdir, name + ".png")
                qmp.cmd("screendump", filename=png, device=qid, format="png")
                result = f"ok {qid} {png}\n"
            except EOFError:
                return 0
            except Exception as e:  # noqa: BLE001 - the guest gets the message
                result = f"error {e}\n"
            write_atomic(os.path.join(mailbox, "done." + name), result)
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
