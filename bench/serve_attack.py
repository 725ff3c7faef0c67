#!/usr/bin/python3
"""Hostile-client checks of a running `defectnet serve` (issue 9 rows 2 and 4).

usage: bench/serve_attack.py PORT SERVER_PID loris|body IMAGE
  loris: 1000 connections from 127.0.0.2 each sending a header line every 1.5 s and never
         finishing the headers; meanwhile 3 GET /healthz + 2 POST /v1/predict from 127.0.0.1.
         Prints their HTTP codes and how many attacker connections are still open after 14 s.
  body:  64 connections each declaring a 16 MiB body and sending 15 MiB of it; prints the
         server's VmRSS before/after and the code of a normal upload meanwhile.
Needs curl and a loopback that answers 127.0.0.2 (Linux). The server must run on this host
(VmRSS is read from /proc/PID/status).
"""
import socket, sys, time, subprocess, threading
port, pid, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
def curl(path, data=None):
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", f"http://127.0.0.1:{port}{path}"]
    if data: cmd += ["--data-binary", "@" + data]
    return subprocess.run(cmd, capture_output=True, text=True).stdout
if mode == "loris":
    socks = []
    for i in range(1000):
        s = socket.socket(); s.setblocking(True)
        try:
            s.bind(("127.0.0.2", 0)); s.connect(("127.0.0.1", port)); s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            s.close()
    stop = [False]
    def trickle():
        while not stop[0]:
            time.sleep(1.5)
            for s in socks:
                try: s.send(b"X-a: b\r\n")
                except OSError: pass
    th = threading.Thread(target=trickle); th.start()
    time.sleep(2)
    codes = [curl("/healthz") for _ in range(3)] + [curl("/v1/predict?line=L1", sys.argv[4]) for _ in range(2)]
    time.sleep(12)
    alive = 0
    for s in socks:
        try:
            s.setblocking(False); d = s.recv(100)
            if d != b"": alive += 0
        except BlockingIOError: alive += 1
        except OSError: pass
    stop[0] = True; th.join()
    print(f"1000 slow-header connections from 127.0.0.2 ({len(socks)} connected), 5 normal requests from 127.0.0.1 during the attack: codes {codes}; attacker connections still open after 14 s: {alive}")
    for s in socks: s.close()
else:
    r0 = rss(); socks = []; codes = []
    chunk = b"x" * (1 << 20)
    for i in range(64):
        s = socket.socket(); s.connect(("127.0.0.1", port))
        s.send(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216\r\n\r\n")
        socks.append(s)
    def feed(s):
        try:
            for k in range(15): s.sendall(chunk)
        except OSError: pass
    ths = [threading.Thread(target=feed, args=(s,)) for s in socks]
    for t in ths: t.start()
    for t in ths: t.join(timeout=60)
    time.sleep(1)
    r1 = rss()
    code = curl("/v1/predict?line=L1", sys.argv[4])
    print(f"64 connections each sending 15 of 16 MiB: VmRSS {r0} MB -> {r1} MB; a normal upload meanwhile: {code}")
    for s in socks: s.close()
