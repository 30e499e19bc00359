"""`tw-mesh sandbox run` (compute.sandbox.cli), run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = '''
from taskworker import TaskWorker
worker = TaskWorker("worker_001")

@worker.function("hello")
def hello_world():
    return "Hello from HiveMind!"

@worker.function("add")
def add_numbers(a, b):
    return a + b

def greet(name, punct="!"):
    return {"greeting": "hi " + name + punct}

def boom():
    raise ValueError("bad input")

def escape():
    import os
    return os.listdir("/")

def spin():
    while True:
        pass

def secret():
    return worker.get_secret("external_api_key")
'''
ROOT = Path(__file__).resolve().parents[2]


def sandbox(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "fn.py"
    path.write_text(MODULE)
    args = [a.replace("FILE", str(path)) for a in argv]
    return subprocess.run([sys.executable, "-m", "compute.sandbox.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("argv", "expected"), [
    (["run", "FILE", "--entry", "hello"], "Hello from HiveMind!"),
    (["run", "FILE", "--entry", "add", "--args", "[2, 3]"], 5),
    (["run", "FILE", "--entry", "greet", "--args", '{"name": "Ada"}'], {"greeting": "hi Ada!"}),
    (["run", "FILE", "--entry", "greet", "--args", '["Bo"]', "--kwargs", '{"punct": "?"}'],
     {"greeting": "hi Bo?"}),
])
def test_run_prints_json(tmp_path: Path, argv: list[str], expected: object) -> None:
    proc = sandbox(tmp_path, *argv)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected
    assert proc.stderr == ""


@pytest.mark.parametrize(("argv", "code", "fragment"), [
    (["run", "FILE", "--entry", "boom"], 1, "boom raised ValueError: bad input"),
    (["run", "FILE", "--entry", "escape"], 3, "import of 'os' is not allowed"),
    (["run", "FILE", "--entry", "secret"], 3, "no secret 'external_api_key'"),
    (["run", "FILE", "--entry", "spin", "--wall-time", "0.5"], 4, "wall-clock limit"),
    (["run", "FILE", "--entry", "add", "--args", "[1]"], 5, "missing required argument"),
    (["run", "FILE", "--entry", "nope"], 5, "no function 'nope'"),
    (["run", "FILE", "--entry", "add", "--args", "[1,"], 5, "must be JSON"),
    (["run", "/nonexistent.py", "--entry", "add"], 2, "cannot read"),
    (["run", "FILE", "--entry", "add", "--wall-time", "-1"], 2, "must be"),
])
def test_refusals_are_one_line(tmp_path: Path, argv: list[str], code: int, fragment: str) -> None:
    proc = sandbox(tmp_path, *argv)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert "Traceback" not in proc.stderr


def test_traceback_flag_shows_only_user_frames(tmp_path: Path) -> None:
    proc = sandbox(tmp_path, "run", "FILE", "--entry", "boom", "--traceback")
    assert proc.returncode == 1
    assert 'File "fn.py", line 17, in boom' in proc.stderr
    assert "compute/sandbox" not in proc.stderr


def test_help_teaches(tmp_path: Path) -> None:
    proc = sandbox(tmp_path, "run", "--help")
    assert proc.returncode == 0
    for word in ("--entry", "--args", "exit status", "JSON", "examples"):
        assert word in proc.stdout


def test_layers(tmp_path: Path) -> None:
    proc = sandbox(tmp_path, "layers")
    assert proc.returncode == 0
    layers = json.loads(proc.stdout)
    assert layers["seccomp"] is True and "net" in layers["namespaces"]
