"""A virtual X display for napari's OpenGL canvas on a machine without a screen (tests, the screenshot script).

Qt's offscreen platform takes its OpenGL from an X display; Xvfb (Debian's xvfb) provides one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time


def start_xvfb(screen: str = "1280x1024x24"):
    """Start Xvfb on a free display number and set DISPLAY; returns the process, or None when DISPLAY is already
    set or Xvfb is not installed. A watcher stops it once this process has ended (Qt may hold its connection
    until exit). Xvfb runs in its own session, so signals sent to the caller's process group never reach it."""
    if os.environ.get("DISPLAY") or shutil.which("Xvfb") is None:
        return None
    for _ in range(3):
        read, write = os.pipe()
        proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", screen, "-nolisten", "tcp"],
                                pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        os.close(write)
        with os.fdopen(read) as f:
            number = f.readline().strip()
        if number:
            os.environ["DISPLAY"] = f":{number}"
            subprocess.Popen(["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
                                          f"kill {proc.pid}"], stdin=subprocess.DEVNULL, start_new_session=True)
            return proc
        proc.kill()
        time.sleep(1.0)
    return None
