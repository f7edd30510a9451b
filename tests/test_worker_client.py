"""Blender's side of the worker: lazy start, version handshake, crashes, cancel, restart, shutdown."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest


@pytest.fixture
def wc(cadence):
    """operators.worker.client, with the preference pointing at this test run's Python; stops the worker after."""
    import bpy

    prefs = bpy.context.preferences.addons[cadence.__name__].preferences
    old = prefs.worker_python
    prefs.worker_python = sys.executable
    cadence.operators.worker.session.shutdown_client()
    yield cadence.operators.worker.client
    cadence.operators.worker.session.shutdown_client()
    prefs.worker_python = old


@pytest.fixture
def ws(wc, cadence):
    """operators.worker.session (the shared client), with ``wc``'s preference and clean-up."""
    return cadence.operators.worker.session


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_lazy_start_with_configured_python_and_check_operator(wc, ws):
    import bpy

    assert ws.current_client() is None  # nothing runs until a job needs it
    client = ws.get_client()
    assert client.is_alive() and client.python == sys.executable
    assert ws.get_client() is client and client.pid == ws.get_client().pid  # reused, not restarted
    data = client.run_sync("ping")
    assert data["executable"] == sys.executable and data["cadence"] == client.info["cadence"]
    assert bpy.ops.cadence.check_worker(deep=False) == {"FINISHED"}
    assert "Cadence" in cadence_status(wc)
    assert os.path.isfile(client.log_path) and "ready: pid" in open(client.log_path).read()


def cadence_status(wc) -> str:
    import importlib

    return importlib.import_module(wc.__name__.rpartition(".")[0] + ".ops").status_text()


def test_default_python_is_the_checkout_venv(wc, cadence, ws):
    import bpy

    prefs = bpy.context.preferences.addons[cadence.__name__].preferences
    prefs.worker_python = ""
    expected = os.path.join(wc.EXT_DIR, ".venv", "bin", "python")
    assert os.path.isfile(expected)
    assert ws.resolve_python() == expected


def test_missing_python_is_a_clear_error(wc, cadence, tmp_path, ws):
    import bpy

    prefs = bpy.context.preferences.addons[cadence.__name__].preferences
    prefs.worker_python = str(tmp_path / "nope" / "python")
    with pytest.raises(wc.WorkerError, match="does not exist.*Set up Worker") as info:
        ws.get_client()
    assert info.value.code == "missing" and ws.current_client() is None
    with pytest.raises(wc.WorkerError, match="Cannot run the Cadence worker Python"):
        wc.WorkerClient().start(str(tmp_path / "nope" / "python"), str(tmp_path))


def _fake_python(tmp_path, body: str):
    script = tmp_path / "fake-python"
    script.write_text(f"#!{sys.executable}\nimport json, os, sys\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_worker_of_another_version_is_refused(wc, tmp_path):
    hello = {"type": "hello", "protocol": 1, "cadence": "0.0.9", "pid": 1, "python": "x"}
    fake = _fake_python(tmp_path, f"print(json.dumps({hello!r}), flush=True)\nsys.stdin.read()")
    client = wc.WorkerClient()
    with pytest.raises(wc.WorkerVersionError) as info:
        client.start(fake, str(tmp_path))
    msg = str(info.value)
    assert f"worker at {fake} is version 0.0.9" in msg and "this extension is 0.1.0" in msg
    assert "restart Blender" in msg and not client.is_alive()


def test_program_that_is_not_a_worker_is_refused(wc, tmp_path):
    fake = _fake_python(tmp_path, "print('Python 2.7 says hi', flush=True)\nsys.stdin.read()")
    with pytest.raises(wc.WorkerError, match="did not answer as a Cadence worker"):
        wc.WorkerClient().start(fake, str(tmp_path))
    crash = _fake_python(tmp_path, "sys.stderr.write('No module named numpy\\n'); sys.exit(3)")
    with pytest.raises(wc.WorkerError, match="(?s)exit code 3.*No module named numpy"):
        wc.WorkerClient().start(crash, str(tmp_path))


def test_killed_mid_job_raises_then_next_job_restarts(wc, clean_scene, ws):
    import bpy

    client = ws.get_client()
    first_pid, first_jobs_dir = client.pid, client.info["jobs_dir"]
    assert os.path.isdir(first_jobs_dir)

    def kill_on_progress(fraction, message):
        os.kill(first_pid, signal.SIGKILL)

    t0 = time.monotonic()
    with pytest.raises(wc.WorkerError, match="stopped unexpectedly.*killed by signal 9") as info:
        client.run_sync("sleep", {"seconds": 30}, on_progress=kill_on_progress)
    assert info.value.code == "worker_died" and time.monotonic() - t0 < 5.0
    assert not client.is_alive() and len(bpy.data.objects) == 0 and len(bpy.data.actions) == 0
    again = ws.get_client()  # restarts the dead worker
    assert again.is_alive() and again.pid != first_pid
    assert again.run_sync("sleep", {"seconds": 0.05})["steps"] >= 1
    assert not os.path.exists(first_jobs_dir)  # the client cleans up after a worker that could not


def test_a_killed_worker_and_what_it_started_are_cleaned_up_without_hanging(wc, tmp_path):
    """A worker killed from outside leaves a child holding its stderr pipe (as its recognition processes would):
    stopping it must not wait on that pipe, and the child goes with it (the worker's process group)."""
    import threading

    hello = {"type": "hello", "protocol": wc.protocol.PROTOCOL_VERSION, "cadence": wc.protocol.CADENCE_VERSION,
             "pid": 1, "python": "x"}
    child_pid = tmp_path / "child.pid"
    body = (f"import subprocess\n"
            f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(child_pid)!r}, 'w').write(str(c.pid))\n"
            f"print(json.dumps({hello!r}), flush=True)\nsys.stdin.read()")
    client = wc.WorkerClient()
    client.start(_fake_python(tmp_path, body), str(tmp_path))
    child = int(child_pid.read_text())
    os.kill(client.pid, signal.SIGKILL)
    stopper = threading.Thread(target=client.stop, daemon=True)
    t0 = time.monotonic()
    stopper.start()
    stopper.join(20.0)
    assert not stopper.is_alive(), "stop() hung on the pipe the worker's child holds"
    assert time.monotonic() - t0 < 10.0
    deadline = time.monotonic() + 5.0
    while not _gone(child):
        assert time.monotonic() < deadline, "the worker's child outlived it"
        time.sleep(0.05)


def test_a_busy_worker_answers_heartbeats_and_a_hung_one_is_stopped(wc, monkeypatch, ws):
    """A job that reports nothing for longer than the stall limit still finishes (the worker's reader thread
    answers heartbeats); a worker that stops answering (SIGSTOP: stopped, as if deadlocked) is killed and the
    job fails with a clear message instead of blocking a script forever."""
    import importlib
    import threading

    monkeypatch.setattr(wc, "STALL_S", 1.0)
    monkeypatch.setattr(wc, "HEARTBEAT_S", 0.2)
    client = ws.get_client()
    assert client.run_sync("sleep", {"seconds": 2.5, "stubborn": True})["slept"] == 2.5
    pid = client.pid
    threading.Timer(0.5, os.kill, (pid, signal.SIGSTOP)).start()
    t0 = time.monotonic()
    with pytest.raises(wc.WorkerError, match="stopped responding") as info:
        client.run_sync("sleep", {"seconds": 30, "stubborn": True})
    assert info.value.code == "timeout" and time.monotonic() - t0 < 10.0
    deadline = time.monotonic() + 5.0
    while not _gone(pid):
        assert time.monotonic() < deadline, "the hung worker was not killed"
        time.sleep(0.05)
    assert client.run_sync("sleep", {"seconds": 0.05})["steps"] >= 1  # the next job gets a fresh worker
    # The operators' path (WorkerJob, modal or synchronous) checks the same way.
    import bpy

    job = importlib.import_module(wc.__name__.rpartition(".")[0] + ".job").WorkerJob(
        bpy.context, {"seconds": 30, "stubborn": True})
    job.kind = "sleep"
    job.start()
    threading.Timer(0.5, os.kill, (job.client.pid, signal.SIGSTOP)).start()
    t0 = time.monotonic()
    job.run_sync()
    assert "stopped responding" in job.error and time.monotonic() - t0 < 10.0


def test_submit_poll_and_cancel(wc, ws):
    client = ws.get_client()
    job = client.submit("sleep", {"seconds": 0.2})
    events, deadline = [], time.monotonic() + 5
    while not events or events[-1]["type"] not in ("result", "error"):
        assert time.monotonic() < deadline
        events += client.poll(job)
        time.sleep(0.01)
    assert [e["type"] for e in events[:-1]] == ["progress"] * (len(events) - 1) and events[-1]["type"] == "result"

    pid = client.pid
    t0 = time.monotonic()
    with pytest.raises(wc.WorkerCancelled):
        client.run_sync("sleep", {"seconds": 30}, cancel_check=lambda: time.monotonic() - t0 > 0.2)
    assert time.monotonic() - t0 < 1.5 and client.pid == pid  # cancelled cleanly, same worker
    with pytest.raises(wc.WorkerError, match="failing on purpose") as info:
        client.run_sync("fail")
    assert "RuntimeError" in info.value.traceback


def test_cancel_of_a_job_that_ignores_it_kills_the_worker(wc, monkeypatch, ws):
    monkeypatch.setattr(wc, "CANCEL_GRACE_S", 0.3)
    client = ws.get_client()
    pid, t0 = client.pid, time.monotonic()
    with pytest.raises(wc.WorkerCancelled, match="did not stop in time"):
        client.run_sync("sleep", {"seconds": 30, "stubborn": True}, cancel_check=lambda: True)
    assert time.monotonic() - t0 < 3.0 and _gone(pid)
    assert ws.get_client().run_sync("ping")["cadence"]


def test_unpolled_progress_is_bounded_but_endings_are_kept(wc, monkeypatch, ws):
    monkeypatch.setattr(wc, "MAX_EVENTS", 10)
    client = ws.get_client()
    first = client.submit("ping")
    busy = client.submit("sleep", {"seconds": 0.6})  # ~12 progress events, never polled while running
    while not any(e["type"] == "result" for e in client._events if e["id"] == busy):
        time.sleep(0.02)
    assert len(client._events) <= 10
    assert [e["type"] for e in client.poll(first)] == ["result"]
    assert client.poll(busy)[-1]["type"] == "result"


def test_callback_error_cancels_the_job(wc, ws):
    client = ws.get_client()

    def explode(fraction, message):
        raise KeyError("callback bug")

    with pytest.raises(KeyError):
        client.run_sync("sleep", {"seconds": 30}, on_progress=explode)
    t0 = time.monotonic()
    assert client.run_sync("ping")["cadence"] and time.monotonic() - t0 < 1.0  # not stuck behind the sleep


def test_timeout_kills_and_next_job_restarts(wc, ws):
    client = ws.get_client()
    with pytest.raises(wc.WorkerError, match="longer than") as info:
        client.run_sync("sleep", {"seconds": 30}, timeout=0.3)
    assert info.value.code == "timeout" and not client.is_alive()
    assert client.run_sync("ping")["cadence"]  # submit() restarts it


def test_unregister_stops_the_worker(wc, cadence, ws):
    client = ws.get_client()
    pid = client.pid
    cadence.operators.unregister()
    try:
        assert ws.current_client() is None and not client.is_alive() and _gone(pid)
    finally:
        cadence.operators.register()


def test_blender_side_sends_only_json(wc, ws):
    with pytest.raises(wc.WorkerError, match="Cannot send"):
        ws.get_client().submit("ping", {"bad": object()})
    assert json.loads(json.dumps(ws.get_client().run_sync("ping", {"deep": False})))


def test_preferences_show_worker_status_and_check_button(wc, cadence, ws):
    import types

    class Layout:
        def __init__(self):
            self.items = []

        def row(self):
            return self

        def prop(self, owner, name, **kw):
            self.items.append(("prop", name))

        def label(self, text="", icon="NONE"):
            self.items.append(("label", text, icon))

        def operator(self, idname, **kw):
            self.items.append(("operator", idname))

    ws.get_client()
    layout = Layout()
    cadence.panels.preferences.CADENCE_AddonPreferences.draw(types.SimpleNamespace(layout=layout), None)
    labels = [i for i in layout.items if i[0] == "label"]
    assert labels and labels[0][1].startswith("Worker running (pid ")
    assert ("operator", "cadence.check_worker") in layout.items
