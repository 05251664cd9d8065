#!/usr/bin/env python3
"""A tiny multicast probe for the lab's shape check.

mcast_probe.py send GROUP PORT IFACE_ADDR COUNT     send COUNT datagrams
mcast_probe.py listen GROUP PORT IFACE_ADDR SECS    print how many arrived
mcast_probe.py reach ADDR                           exit 0 if ADDR answers TCP
                                                    (even with a refusal): unicast works
"""
import socket
import struct
import sys
import time


def reach(addr: str) -> None:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((addr, 9))
    except ConnectionRefusedError:
        pass
    except OSError:
        sys.exit(1)


def main() -> None:
    if sys.argv[1] == "reach":
        reach(sys.argv[2])
        return
    mode, group, port, iface, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    if mode == "send":
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 8)
        for i in range(int(n)):
            s.sendto(b"lab probe %d" % i, (group, port))
            time.sleep(0.01)
        return
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((group, port))
    mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(iface))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    deadline = time.monotonic() + float(n)
    heard = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            s.recv(2048)
            heard += 1
        except socket.timeout:
            break
    print(heard)


if __name__ == "__main__":
    main()
