"""`make run`'s last step: the console (runserver) and one migration worker, as one
command. Ctrl-C (or SIGTERM) stops both: the worker finishes the file it is applying;
a second Ctrl-C stops it at once. When either process ends on its own, the other is
stopped too and this exits with its code.

Each child runs in its own process group, so a terminal's Ctrl-C reaches only this
script, which passes exactly one signal to each group (runserver's autoreloader
and its server process alike).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADDRESS = os.environ.get("DEVSERVER_ADDRESS", "127.0.0.1:8000")
GRACE_SECONDS = 60  # a worker finishes its current file; then it is killed


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, start_new_session=True
    )


def signal_group(process: subprocess.Popen, signum: int) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)


def main() -> int:
    children = {
        "console": spawn("runserver", ADDRESS),
        "worker": spawn("migration_worker"),
    }
    asked: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: asked.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, frame: asked.append(signum))

    ended = None
    while not asked and ended is None:
        ended = next((name for name, p in children.items() if p.poll() is not None), None)
        time.sleep(0.2)
    if ended:
        print(f"devserver: the {ended} exited ({children[ended].returncode}); stopping the rest")
    else:
        print("devserver: stopping the console and the worker (Ctrl-C again: at once)")

    sent = len(asked)
    for process in children.values():
        signal_group(process, signal.SIGINT if asked[:1] == [signal.SIGINT] else signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while any(p.poll() is None for p in children.values()):
        if len(asked) > sent:  # asked again: pass it on (the worker then stops at once)
            sent = len(asked)
            for process in children.values():
                signal_group(process, asked[-1])
        if time.monotonic() > deadline:
            for process in children.values():
                signal_group(process, signal.SIGKILL)
        time.sleep(0.2)
    return children[ended].returncode if ended else 0


if __name__ == "__main__":
    sys.exit(main())
