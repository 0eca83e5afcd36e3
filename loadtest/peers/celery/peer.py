"""The Celery peer of dron's load tests: Celery beat and a Celery worker on the local RabbitMQ,
running the jobs of a jobs file (a JSON array of Chronos jobs: name, command, schedule, epsilon)
as shell commands, as many teams would run periodic shell jobs without dron.

Run by dron-loadtest (`dron-loadtest peer celery ...`), from this directory:

    PEER_JOBS_FILE=jobs.json PEER_QUEUE=dron-peer-123 celery -A peer worker --pool prefork -c 2
    PEER_JOBS_FILE=jobs.json PEER_QUEUE=dron-peer-123 celery -A peer beat -S peer:PeerScheduler

Environment:
    PEER_JOBS_FILE  the jobs file; beat re-reads it when it changes (new jobs are added).
    PEER_QUEUE      the queue (and exchange) of this run: unique per run, not durable,
                    deleted with its last consumer.
    PEER_BROKER     default amqp://guest:guest@127.0.0.1:5672//
    PEER_READY_DIR  where `worker.ready` and `beat.ready` are written once each is up.

Targets. Beat's own interval schedule fires "period after the last send", which drifts; the
jobs' targets are `start + k * period` (ISO 8601 `R[n]/start/period`), so a `PeerEntry` fires
target `first + total_run_count` of its `TargetSchedule`: every target once, in order, late if
beat is behind, never skipped, never early. The task receives the target and runs the command
with DRON_JOB, DRON_TARGET (RFC 3339 UTC, ms), DRON_ATTEMPT=0 and DRON_TASK_ID (the Celery
task id) set, exactly the variables dron gives its tasks, so the same recorded command works.
"""

import json
import os
import re
import subprocess
import time
from datetime import datetime, timezone

from celery import Celery, signals
from celery.beat import ScheduleEntry, Scheduler
from celery.schedules import BaseSchedule, schedstate
from kombu import Exchange, Queue

BROKER = os.environ.get("PEER_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("PEER_QUEUE", "dron-peer")
JOBS_FILE = os.environ.get("PEER_JOBS_FILE", "")
READY_DIR = os.environ.get("PEER_READY_DIR", "")

app = Celery("peer", broker=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_queues=[
        Queue(
            QUEUE,
            Exchange(QUEUE, durable=False, auto_delete=True),
            routing_key=QUEUE,
            durable=False,
            auto_delete=True,
        )
    ],
    task_ignore_result=True,
    enable_utc=True,
    timezone="UTC",
    # Beat wakes at least every second, so a changed jobs file is read within a second.
    beat_max_loop_interval=1,
    worker_hijack_root_logger=False,
    # No remote control: several peers may run at once on one broker (their pidbox queues
    # would clash), and nothing here inspects them.
    worker_enable_remote_control=False,
    beat_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
)


# ----- schedules (pure) ------------------------------------------------------------------------

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration_ms(text):
    """An ISO 8601 duration of days, hours, minutes and seconds (PT10S, PT1M, P1D) in ms."""
    match = _DURATION.match(text)
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"unsupported duration {text!r}")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    ms = round(((parts["d"] * 24 + parts["h"]) * 60 + parts["m"]) * 60_000 + parts["s"] * 1000)
    if ms <= 0:
        raise ValueError(f"duration {text!r} is not positive")
    return ms


def parse_time_ms(text):
    """An RFC 3339 time (Z or an offset) in Unix ms."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return round(moment.timestamp() * 1000)


def format_target(ms):
    """Unix ms as DRON_TARGET: RFC 3339, UTC, milliseconds."""
    moment = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def parse_schedule(text, now_ms):
    """`R[n]/start/period` as (start_ms, period_ms, count or None); an empty start is now."""
    parts = text.split("/")
    if len(parts) != 3 or not parts[0].startswith("R"):
        raise ValueError(f"unsupported schedule {text!r}: expected R[n]/start/period")
    count = int(parts[0][1:]) if parts[0][1:] else None
    start_ms = parse_time_ms(parts[1]) if parts[1] else now_ms
    return start_ms, parse_duration_ms(parts[2]), count


class TargetSchedule(BaseSchedule):
    """The targets `start + k * period` (k < count) from the first one at or after `since_ms`."""

    def __init__(self, start_ms, period_ms, count=None, since_ms=None, app=None):
        self.start_ms = start_ms
        self.period_ms = period_ms
        self.count = count
        since = start_ms if since_ms is None else since_ms
        # The first target not before `since`: targets before the job was loaded are not owed.
        self.first = max(0, -((start_ms - since) // period_ms))
        super().__init__(app=app)

    def target_ms(self, run_count):
        """The target of the entry's `run_count`-th fire; None past the repetition count."""
        index = self.first + run_count
        if self.count is not None and index >= self.count:
            return None
        return self.start_ms + index * self.period_ms

    def state(self, run_count, now_ms):
        """(due, seconds to wait before asking again)."""
        target = self.target_ms(run_count)
        if target is None:
            return schedstate(False, 3600.0)
        if now_ms < target:
            return schedstate(False, (target - now_ms) / 1000)
        following = self.target_ms(run_count + 1)
        wait = 3600.0 if following is None else max(0.0, (following - now_ms) / 1000)
        return schedstate(True, wait)

    def is_due(self, last_run_at):  # beat always asks through PeerEntry.is_due
        raise NotImplementedError("TargetSchedule needs the run count: use PeerEntry")

    def remaining_estimate(self, last_run_at):
        raise NotImplementedError

    def __repr__(self):
        return f"<TargetSchedule {self.start_ms}+k*{self.period_ms} count={self.count}>"

    def __eq__(self, other):
        if isinstance(other, TargetSchedule):
            return (self.start_ms, self.period_ms, self.count, self.first) == (
                other.start_ms, other.period_ms, other.count, other.first)
        return NotImplemented

    def __hash__(self):
        return hash((self.start_ms, self.period_ms, self.count, self.first))

    def __reduce__(self):
        return self.__class__, (self.start_ms, self.period_ms, self.count, None)


def now_ms():
    return round(time.time() * 1000)


def load_jobs(path):
    """The jobs file: a JSON array of Chronos jobs; only name, command and schedule are used."""
    with open(path, encoding="utf-8") as file:
        jobs = json.load(file)
    if not isinstance(jobs, list):
        raise ValueError(f"{path}: not a JSON array")
    for job in jobs:
        if not isinstance(job, dict) or not job.get("name") or not job.get("schedule"):
            raise ValueError(f"{path}: a job without a name or a schedule: {job!r}")
    return jobs


# ----- beat ------------------------------------------------------------------------------------


class PeerEntry(ScheduleEntry):
    """An entry whose k-th fire is its schedule's k-th target."""

    def is_due(self):
        return self.schedule.state(self.total_run_count, now_ms())


class PeerScheduler(Scheduler):
    """Beat's in-memory scheduler, its entries built from the jobs file (re-read when changed)
    and each message carrying the target it was sent for."""

    Entry = PeerEntry

    def setup_schedule(self):
        self._jobs_mtime = None
        self._jobs_checked = 0.0
        self._reload_jobs()

    def _reload_jobs(self):
        try:
            mtime = os.stat(JOBS_FILE).st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._jobs_mtime:
            return
        self._jobs_mtime = mtime
        loaded = now_ms()
        added = 0
        for job in load_jobs(JOBS_FILE):
            name = job["name"]
            if name in self.schedule:
                continue
            start, period, count = parse_schedule(job["schedule"], loaded)
            self.schedule[name] = self.Entry(
                name=name,
                task="peer.run_job",
                schedule=TargetSchedule(start, period, count, since_ms=loaded, app=self.app),
                kwargs={"job": name, "command": job.get("command", "true")},
                app=self.app,
            )
            added += 1
        if added:
            self.logger.warning("peer: %d jobs added from %s (%d in all)",
                                added, JOBS_FILE, len(self.schedule))

    def tick(self, *args, **kwargs):
        if time.monotonic() - self._jobs_checked >= 1.0:
            self._jobs_checked = time.monotonic()
            self._reload_jobs()
        return super().tick(*args, **kwargs)

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        entry = self.reserve(entry) if advance else entry
        target = entry.schedule.target_ms(entry.total_run_count)
        arguments = dict(entry.kwargs, target=format_target(target))
        return run_job.apply_async(kwargs=arguments, producer=producer)


@signals.beat_init.connect
def _beat_ready(sender=None, **_):
    _touch("beat.ready")


# ----- worker ----------------------------------------------------------------------------------


@app.task(name="peer.run_job", bind=True, ignore_result=True, acks_late=False)
def run_job(self, job, command, target):
    """Runs the job's shell command for one target, as dron's agent would, and waits for it."""
    env = dict(os.environ, DRON_JOB=job, DRON_TARGET=target, DRON_ATTEMPT="0",
               DRON_TASK_ID=str(self.request.id))
    return subprocess.run(["/bin/sh", "-c", command], env=env, check=False).returncode


@signals.worker_ready.connect
def _worker_ready(sender=None, **_):
    _touch("worker.ready")


def _touch(name):
    if READY_DIR:
        with open(os.path.join(READY_DIR, name), "w", encoding="utf-8") as file:
            file.write(f"{os.getpid()}\n")
