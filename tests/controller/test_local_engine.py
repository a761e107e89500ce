"""The docker and process engines' loop (runtime.controller.local): a Job's failed container is started again, as a
kubelet does under `restartPolicy: OnFailure`, until the Job's backoffLimit; a server's failure ends the run. Real
processes here; a real trainer killed and resumed is tests/tuning/test_rendered_job.py."""

from __future__ import annotations

import io
import sys

from runtime.controller import local, play

FAIL_TWICE = """
import pathlib, sys
starts = pathlib.Path(sys.argv[1])
starts.write_text(starts.read_text() + "x" if starts.exists() else "x")
sys.exit(0 if len(starts.read_text()) > 2 else 3)
"""


def _step(name: str, code: str, *args: str) -> local.Step:
    return local.Step(name, [sys.executable, "-c", code, *args], {})


def _pod(kind: str, restart_policy: str) -> play.LocalPod:
    return play.LocalPod({"metadata": {"name": "p"}, "spec": {"restartPolicy": restart_policy, "containers": []}},
                         backoff_limit=4 if kind == "Job" else None)


def test_a_jobs_failed_container_is_restarted_and_the_pod_succeeds(tmp_path):
    out = io.StringIO()
    starts = tmp_path / "starts"
    sidecar = _step("pusher", "import time; time.sleep(1)")
    assert local._execute([], [_step("trainer", FAIL_TWICE, str(starts)), sidecar], None, out, restarts=4) == 0
    assert starts.read_text() == "xxx"  # failed twice, then succeeded
    lines = [line for line in out.getvalue().splitlines() if line.startswith("container")]
    assert lines == ["container trainer failed (exit 3); restarting it in 1 s (1 of 4, restartPolicy: OnFailure)",
                     "container trainer failed (exit 3); restarting it in 2 s (2 of 4, restartPolicy: OnFailure)"]


def test_past_the_backoff_limit_the_run_fails_with_the_containers_exit_code(tmp_path):
    out = io.StringIO()
    starts = tmp_path / "starts"
    assert local._execute([], [_step("trainer", FAIL_TWICE, str(starts))], None, out, restarts=1) == 3
    assert starts.read_text() == "xx"
    assert out.getvalue().splitlines()[-1] == "container trainer failed (exit 3) after 1 restarts (the Job's backoffLimit)"


def test_a_server_is_not_restarted(tmp_path):
    out = io.StringIO()
    starts = tmp_path / "starts"
    assert local._execute([], [_step("server", FAIL_TWICE, str(starts))], None, out, restarts=None) == 3
    assert starts.read_text() == "x"
    assert out.getvalue().splitlines()[-1] == "container server failed (exit 3)"


def test_only_a_jobs_on_failure_pod_restarts():
    assert local.restart_limit(_pod("Job", "OnFailure")) == 4
    assert local.restart_limit(_pod("Job", "Never")) is None  # a kubelet leaves it to the Job controller's new pods
    assert local.restart_limit(_pod("Deployment", "OnFailure")) is None  # local_pod's form of Always
