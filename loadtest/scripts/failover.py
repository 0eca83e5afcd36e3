"""Failover timeline of a local cluster started by loadtest/scripts/cluster.sh DRON DIR.

    python3 loadtest/scripts/failover.py DIR RESTART ROUNDS

Each round kill -9s the leader (its pid from DIR/nN/pid), polls a survivor's /api/cluster
until it names a new leader and creates a job through it every 20 ms until one is accepted
(204), prints both times, then restarts the killed server with RESTART (a shell command in
which N is the node id; see docs/benchmarks.md for the one used there).
"""
import json, os, signal, subprocess, sys, time, urllib.request
def get(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r: return json.load(r)
    except Exception: return None
def create(port, name):
    body = json.dumps({"name": name, "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT24H"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/scheduler/iso8601", data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r: return r.status
    except urllib.error.HTTPError as e: return e.code
    except Exception: return None
d = sys.argv[1]; restart = sys.argv[2]
results = []
for round in range(int(sys.argv[3])):
    leader = None
    while leader is None:
        s = get("http://127.0.0.1:4401/api/cluster") or get("http://127.0.0.1:4402/api/cluster") or get("http://127.0.0.1:4403/api/cluster")
        leader = s and s.get("leader"); time.sleep(0.2)
    pid = int(open(f"{d}/n{leader}/pid").read())
    other = 4400 + (leader % 3) + 1
    t0 = time.monotonic(); os.kill(pid, signal.SIGKILL)
    elected = None; n = 0
    while True:
        s = get(f"http://127.0.0.1:{other}/api/cluster")
        if elected is None and s and s.get("leader") not in (None, leader): elected = time.monotonic() - t0
        n += 1
        if create(other, f"fo-{round}-{n}") == 204: break
        time.sleep(0.02)
    accepted = time.monotonic() - t0
    results.append((elected, accepted)); print(f"round {round}: leader {leader} killed; new leader known after {elected:.2f} s, writes accepted after {accepted:.2f} s", flush=True)
    # restart the killed node (same command as the script)
    p = subprocess.Popen(["bash", "-c", restart.replace("N", str(leader))])
    time.sleep(4)
