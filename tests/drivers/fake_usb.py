"""A pyusb backend (``usb.backend.IBackend``) that plays recorded HID reports.

No USB host exists on the build machines, so the USB path is tested against this: pyusb's
own ``usb.core.find``/``Device``/``Endpoint`` code runs unchanged on top of it. It models one
HID interface with one interrupt IN endpoint, string descriptors (the serial number), the
kernel driver (usbhid) being attached/detached, and unplugging.
"""

from __future__ import annotations

import errno
import queue
import threading
from typing import Any

import usb.backend
import usb.core


class _Desc:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)
        self.extra_descriptors: list[int] = []


class FakeHidDevice:
    def __init__(
        self,
        vid: int,
        pid: int,
        serial: str,
        *,
        protocol: int = 0,  # bInterfaceProtocol: 1 = boot keyboard, 0 = none (HID POS)
        packet_size: int = 64,
    ) -> None:
        self.vid, self.pid, self.serial = vid, pid, serial
        self.protocol = protocol
        self.packet_size = packet_size
        self.reports: queue.Queue[bytes] = queue.Queue()
        self.plugged = True
        self.kernel_driver = True
        self.claimed = False
        self.detach_calls = 0
        self.attach_calls = 0
        self.bus, self.address = 1, 7

    def play(self, reports: list[bytes]) -> None:
        for report in reports:
            self.reports.put(report)


class FakeBackend(usb.backend.IBackend):  # type: ignore[misc]
    def __init__(self, *devices: FakeHidDevice) -> None:
        self.devices = list(devices)
        self.lock = threading.Lock()

    # -- descriptors ----------------------------------------------------------------------
    def enumerate_devices(self) -> list[FakeHidDevice]:
        return [d for d in self.devices if d.plugged]

    def get_parent(self, dev: FakeHidDevice) -> None:
        return None

    def get_device_descriptor(self, dev: FakeHidDevice) -> _Desc:
        return _Desc(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=dev.vid, idProduct=dev.pid,
            bcdDevice=0x0100, iManufacturer=0, iProduct=0, iSerialNumber=3,
            bNumConfigurations=1, address=dev.address, bus=dev.bus, port_number=1,
            port_numbers=(1,), speed=2,
        )  # fmt: skip

    def get_configuration_descriptor(self, dev: FakeHidDevice, config: int) -> _Desc:
        return _Desc(
            bLength=9, bDescriptorType=2, wTotalLength=34, bNumInterfaces=1,
            bConfigurationValue=1, iConfiguration=0, bmAttributes=0x80, bMaxPower=50,
        )  # fmt: skip

    def get_interface_descriptor(
        self, dev: FakeHidDevice, intf: int, alt: int, config: int
    ) -> _Desc:
        if intf != 0 or alt != 0:
            raise IndexError("no such interface")
        return _Desc(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0,
            bNumEndpoints=1, bInterfaceClass=3, bInterfaceSubClass=1 if dev.protocol else 0,
            bInterfaceProtocol=dev.protocol, iInterface=0,
        )  # fmt: skip

    def get_endpoint_descriptor(
        self, dev: FakeHidDevice, ep: int, intf: int, alt: int, config: int
    ) -> _Desc:
        if ep != 0:
            raise IndexError("no such endpoint")
        return _Desc(
            bLength=7, bDescriptorType=5, bEndpointAddress=0x81, bmAttributes=0x03,
            wMaxPacketSize=dev.packet_size, bInterval=1, bRefresh=0, bSynchAddress=0,
        )  # fmt: skip

    # -- handles ------------------------------------------------------------------------
    def _check(self, dev: FakeHidDevice) -> None:
        if not dev.plugged:
            raise usb.core.USBError("No such device", errno=errno.ENODEV)

    def open_device(self, dev: FakeHidDevice) -> FakeHidDevice:
        self._check(dev)
        return dev

    def close_device(self, dev_handle: FakeHidDevice) -> None:
        return None

    def set_configuration(self, dev_handle: FakeHidDevice, config_value: int) -> None:
        self._check(dev_handle)

    def get_configuration(self, dev_handle: FakeHidDevice) -> int:
        self._check(dev_handle)
        return 1

    def claim_interface(self, dev_handle: FakeHidDevice, intf: int) -> None:
        self._check(dev_handle)
        if dev_handle.kernel_driver:
            raise usb.core.USBError("Resource busy", errno=errno.EBUSY)
        dev_handle.claimed = True

    def release_interface(self, dev_handle: FakeHidDevice, intf: int) -> None:
        dev_handle.claimed = False
        self._check(dev_handle)

    def is_kernel_driver_active(self, dev_handle: FakeHidDevice, intf: int) -> bool:
        self._check(dev_handle)
        return dev_handle.kernel_driver

    def detach_kernel_driver(self, dev_handle: FakeHidDevice, intf: int) -> None:
        self._check(dev_handle)
        dev_handle.kernel_driver = False
        dev_handle.detach_calls += 1

    def attach_kernel_driver(self, dev_handle: FakeHidDevice, intf: int) -> None:
        self._check(dev_handle)
        dev_handle.kernel_driver = True
        dev_handle.attach_calls += 1

    def ctrl_transfer(
        self,
        dev_handle: FakeHidDevice,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: Any,
        timeout: int,
    ) -> int:
        self._check(dev_handle)
        if bRequest == 6 and wValue >> 8 == 3:  # GET_DESCRIPTOR, string
            index = wValue & 0xFF
            if index == 0:
                payload = bytes([4, 3, 0x09, 0x04])  # langid en-US
            else:
                text = dev_handle.serial.encode("utf-16-le")
                payload = bytes([2 + len(text), 3]) + text
            n = min(len(payload), len(data))
            data[:n] = type(data)(data.typecode, payload[:n])
            return n
        raise usb.core.USBError("Pipe error", errno=errno.EPIPE)

    def intr_read(
        self, dev_handle: FakeHidDevice, ep: int, intf: int, buff: Any, timeout: int
    ) -> int:
        self._check(dev_handle)
        if not dev_handle.claimed:
            raise usb.core.USBError("interface not claimed", errno=errno.EBUSY)
        try:
            report = dev_handle.reports.get(timeout=timeout / 1000)
        except queue.Empty:
            self._check(dev_handle)
            raise usb.core.USBTimeoutError("Operation timed out", errno=errno.ETIMEDOUT) from None
        n = min(len(report), len(buff))
        buff[:n] = type(buff)(buff.typecode, report[:n])
        return n
