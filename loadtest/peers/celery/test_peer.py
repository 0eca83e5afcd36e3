"""Unit tests of the peer's pure parts: `.venv/bin/python -m unittest test_peer` here."""

import json
import os
import tempfile
import unittest

import peer

START = "2026-11-23T10:00:00.000Z"
START_MS = 1_795_428_000_000


class Schedules(unittest.TestCase):
    def test_durations(self):
        self.assertEqual(peer.parse_duration_ms("PT10S"), 10_000)
        self.assertEqual(peer.parse_duration_ms("PT1M"), 60_000)
        self.assertEqual(peer.parse_duration_ms("P1D"), 86_400_000)
        self.assertEqual(peer.parse_duration_ms("PT0.5S"), 500)
        self.assertEqual(peer.parse_duration_ms("P1DT1H"), 90_000_000)
        for bad in ("PT", "P", "10S", "PT0S", "P1Y"):
            with self.assertRaises(ValueError, msg=bad):
                peer.parse_duration_ms(bad)

    def test_schedules(self):
        self.assertEqual(peer.parse_schedule(f"R/{START}/PT10S", 0), (START_MS, 10_000, None))
        self.assertEqual(peer.parse_schedule(f"R1/{START}/P1D", 0), (START_MS, 86_400_000, 1))
        self.assertEqual(peer.parse_schedule("R//PT1S", 42), (42, 1_000, None))
        with self.assertRaises(ValueError):
            peer.parse_schedule("* * * * *", 0)

    def test_targets_are_formatted_as_dron_does(self):
        self.assertEqual(peer.format_target(START_MS + 250), "2026-11-23T10:00:00.250Z")
        self.assertEqual(peer.parse_time_ms("2026-11-23T11:00:00+01:00"), START_MS)


class Alignment(unittest.TestCase):
    def test_fires_each_target_once_in_order_aligned_to_the_start(self):
        schedule = peer.TargetSchedule(START_MS, 10_000, since_ms=START_MS - 5_000)
        self.assertEqual(schedule.state(0, START_MS - 1_000), (False, 1.0))
        self.assertEqual(schedule.state(0, START_MS), (True, 10.0))
        self.assertEqual(schedule.target_ms(0), START_MS)
        # Beat fell 25 s behind: the next fire is still the next target, due at once.
        self.assertEqual(schedule.state(1, START_MS + 25_000), (True, 0.0))
        self.assertEqual(schedule.target_ms(1), START_MS + 10_000)

    def test_targets_before_the_job_was_loaded_are_not_owed(self):
        schedule = peer.TargetSchedule(START_MS, 10_000, since_ms=START_MS + 12_000)
        self.assertEqual(schedule.first, 2)
        self.assertEqual(schedule.target_ms(0), START_MS + 20_000)
        on_the_dot = peer.TargetSchedule(START_MS, 10_000, since_ms=START_MS + 20_000)
        self.assertEqual(on_the_dot.target_ms(0), START_MS + 20_000)

    def test_a_repetition_count_ends_the_schedule(self):
        once = peer.TargetSchedule(START_MS, 86_400_000, count=1, since_ms=START_MS - 1)
        self.assertEqual(once.target_ms(0), START_MS)
        self.assertIsNone(once.target_ms(1))
        self.assertFalse(once.state(1, START_MS + 1).is_due)


class JobsFile(unittest.TestCase):
    def test_reads_a_chronos_array_and_refuses_anything_else(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "jobs.json")
            jobs = [{"name": "a", "command": "true", "schedule": f"R/{START}/PT1M",
                     "epsilon": "PT60S"}]
            with open(path, "w", encoding="utf-8") as file:
                json.dump(jobs, file)
            self.assertEqual(peer.load_jobs(path), jobs)
            with open(path, "w", encoding="utf-8") as file:
                json.dump({"name": "a"}, file)
            with self.assertRaises(ValueError):
                peer.load_jobs(path)


if __name__ == "__main__":
    unittest.main()
