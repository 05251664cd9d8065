#!/usr/bin/env python3
"""Does the lab drop a GSO batch as a whole, or datagram by datagram?

Run on a lab that is up with loss (deploy/lab/lab up --loss 0.05):

    deploy/lab/gso_probe.py              # the hosts' interfaces as the lab sets them
    deploy/lab/lab exec origin ip link set eth0 gso_max_segs 65535
    deploy/lab/gso_probe.py              # batches whole past the origin's interface

The origin sends 20,000 datagrams of 1,200 bytes in GSO batches of 50 to a
group; a1, a2 and a3 count what arrives. Per-datagram drop loses about 5%
of them in no pattern; a batch dropped whole loses a multiple of 50.
"""
import os
import socket
import struct
import subprocess
import sys
import time

GROUP, PORT, SEGMENT, BATCH, BATCHES = "239.88.0.9", 6001, 1200, 50, 400
LAB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lab")
RECEIVERS = {"a1": "10.88.1.11", "a2": "10.88.1.12", "a3": "10.88.1.13"}


def receive(local):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    s.bind((GROUP, PORT))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton(local)))
    s.settimeout(3)
    n = 0
    try:
        while True:
            s.recv(65536)
            n += 1
    except socket.timeout:
        pass
    print(n)


def send():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.88.1.10"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 4)
    s.setsockopt(socket.IPPROTO_UDP, 103, SEGMENT)  # UDP_SEGMENT
    run = b"x" * (SEGMENT * BATCH)
    for _ in range(BATCHES):
        s.sendto(run, (GROUP, PORT))
        time.sleep(0.002)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "recv":
        return receive(sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "send":
        return send()
    me = os.path.abspath(__file__)
    procs = {h: subprocess.Popen([LAB, "exec", h, sys.executable, me, "recv", a], stdout=subprocess.PIPE, text=True)
             for h, a in RECEIVERS.items()}
    time.sleep(1)
    subprocess.run([LAB, "exec", "origin", sys.executable, me, "send"], check=True)
    sent = BATCH * BATCHES
    for h, p in procs.items():
        got = int(p.communicate()[0].strip() or 0)
        lost = sent - got
        print(f"{h}: {got} of {sent}, lost {lost}{' (a multiple of %d)' % BATCH if lost and lost % BATCH == 0 else ''}")


if __name__ == "__main__":
    main()
