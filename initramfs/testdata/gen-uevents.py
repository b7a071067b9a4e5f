#!/usr/bin/env python3
"""Record a kernel uevent buffer for the hot-plug unit test (run as root).

Listens on the kernel's uevent netlink group (NETLINK_KOBJECT_UEVENT, group
1, as rescue-init does) and asks the kernel to re-send the "add" event of
the first PCI device (writing "add" to its sysfs `uevent` file: a synthetic
event, like `udevadm trigger`, that changes nothing). Writes the datagram
as received to uevent-pci-add.bin beside this script.

Index of the files here:
  uevent-pci-add.bin  kernel 6.x, Intel host bridge 8086:0d57 (a cloud VM)
"""
import os
import socket
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
dev = sorted(os.listdir("/sys/bus/pci/devices"))[0]
s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
s.bind((0, 1))
s.settimeout(5)


def trigger():
    time.sleep(0.2)
    with open(f"/sys/bus/pci/devices/{dev}/uevent", "w") as f:
        f.write("add")


threading.Thread(target=trigger).start()
while True:
    data, (pid, _groups) = s.recvfrom(65536)
    if pid == 0 and data.startswith(b"add@") and dev.encode() in data:
        break
with open(os.path.join(here, "uevent-pci-add.bin"), "wb") as f:
    f.write(data)
print(data.replace(b"\0", b"\n").decode())
