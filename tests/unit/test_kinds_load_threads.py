"""The built-in kinds load once, and a thread that asks while another is loading them waits for all of
them (it used to see a half-filled registry: "unknown resource 'configmaps'" from a client in a thread).
In a fresh interpreter: this one has loaded them already."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CODE = """
import sys, threading
sys.path.insert(0, {repo!r})
from kubepy.kinds import by_plural
start, errors = threading.Barrier(8), []
def ask():
    start.wait()
    try:
        by_plural("configmaps"), by_plural("horizontalpodautoscalers"), by_plural("pods")
    except KeyError as e:
        errors.append(repr(e))
threads = [threading.Thread(target=ask) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(errors)
"""


def test_threads_asking_while_the_kinds_load_all_find_them():
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", CODE.format(repo=str(REPO))], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        assert out.strip() == "[]", out
