#!/usr/bin/env python3
"""Memory one server holds for unauthenticated connections that send an endless request head
(BENCHMARKS.md "Request heads"): python3 xtask/scripts/header_memory.py BINARY PORT CONNECTIONS BYTES.
Starts BINARY on a fresh data directory, opens CONNECTIONS connections that each send up to
BYTES of header lines (8 KB at a time, for at most 8 s) and never finish the head, and prints
the server's RSS before, with them open, and after they closed."""
import socket, time, resource, sys, os, subprocess, tempfile, shutil
resource.setrlimit(resource.RLIMIT_NOFILE,(20000,20000))
binary, port, N, SZ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
d = tempfile.mkdtemp()
env = dict(os.environ, NETAPI_CHAT_DATA_DIR=d, NETAPI_CHAT_BIND=f"127.0.0.1:{port}")
p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1.5)
rss=lambda: int(open(f'/proc/{p.pid}/status').read().split('VmRSS:')[1].split()[0])//1024
before = rss()
socks=[]
chunk=b"X-Pad: "+b"a"*8000+b"\r\n"
for i in range(N):
    s=socket.socket(); s.connect(('127.0.0.1',port)); s.setblocking(False)
    s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"); socks.append(s)
t0=time.time(); sent=0
while sent<SZ and time.time()-t0<8:
    for s in socks:
        try: s.send(chunk)
        except Exception: pass
    sent+=len(chunk)
time.sleep(1)
peak = rss()
for s in socks: s.close()
time.sleep(2)
print(f"{os.path.basename(binary)}: {N} connections, up to {sent//1024} KiB of header each: RSS {before} MiB before, {peak} MiB with them open, {rss()} MiB 2 s after they closed")
p.kill()
p.wait()
shutil.rmtree(d, ignore_errors=True)
