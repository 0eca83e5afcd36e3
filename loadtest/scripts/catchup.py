"""Catch-up time of a server of a local cluster started by loadtest/scripts/cluster.sh DRON DIR.

    python3 loadtest/scripts/catchup.py DIR RESTART [DOWN_S] [WRITERS]

kill -9s a follower (its pid from DIR/nN/pid), creates jobs through the leader from WRITERS
threads (default 8) for DOWN_S seconds (default 60) while it is down, restarts it with RESTART
(a shell command in which N is the node id, as for failover.py), and measures how long after
the restart it holds every entry the leader had when it was restarted (its lastApplied in its
own /api/cluster), while the writers go on. Prints the entries it was behind, the writes
accepted, and the catch-up time (issue 17's target: within 10 s).
"""
import json, os, signal, subprocess, sys, threading, time, urllib.request


def get(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/cluster", timeout=1) as r:
            return json.load(r)
    except Exception:
        return None


def create(port, name):
    body = json.dumps({"name": name, "command": "true",
                       "schedule": "R/2030-01-01T00:00:00Z/PT24H"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/scheduler/iso8601", data=body,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return None


d = sys.argv[1]
restart = sys.argv[2]
down_s = float(sys.argv[3]) if len(sys.argv) > 3 else 60
writers = int(sys.argv[4]) if len(sys.argv) > 4 else 8

leader = None
while leader is None:
    s = get(4401) or get(4402) or get(4403)
    leader = s and s.get("leader")
    time.sleep(0.2)
follower = leader % 3 + 1
leader_port, follower_port = 4400 + leader, 4400 + follower
os.kill(int(open(f"{d}/n{follower}/pid").read()), signal.SIGKILL)
print(f"node {follower} killed (leader: node {leader}); writing for {down_s:.0f} s", flush=True)

stop = threading.Event()
accepted = [0] * writers


def write(w):
    n = 0
    while not stop.is_set():
        n += 1
        if create(leader_port, f"cu-{int(time.time())}-{w}-{n}") == 204:
            accepted[w] += 1


threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
for t in threads:
    t.start()
time.sleep(down_s)
down_accepted = sum(accepted)
target = get(leader_port)["lastApplied"]
t0 = time.monotonic()
p = subprocess.Popen(["bash", "-c", restart.replace("N", str(follower))])
start_index = None
while True:
    s = get(follower_port)
    if s and start_index is None:
        start_index = s.get("lastApplied") or 0
    if s and (s.get("lastApplied") or 0) >= target:
        break
    time.sleep(0.05)
caught_up = time.monotonic() - t0
stop.set()
for t in threads:
    t.join()
print(f"down {down_s:.0f} s: {down_accepted} jobs created meanwhile ({down_accepted / down_s:.0f}/s), "
      f"the follower was {target - (start_index or 0)} entries behind (index {start_index} -> {target}); "
      f"caught up {caught_up:.2f} s after its restart (writers still going: "
      f"{sum(accepted) - down_accepted} more accepted)", flush=True)
