"""`qcluster`: django-q2's command, lowering the cluster's CPU priority first when LANGRUN_WORKER_NICE says so,
and freezing the loaded objects for the processes it forks.

It takes precedence over django-q2's own command because `flows` comes before `django_q` in INSTALLED_APPS.
"""

import gc
import os
import time

from django.conf import settings
from django_q.management.commands.qcluster import Command as QClusterCommand


class Command(QClusterCommand):
    help = QClusterCommand.help + " The cluster first lowers its CPU priority by LANGRUN_WORKER_NICE (os.nice)."

    def handle(self, *args, **options):
        cluster_priority_lower()
        # The cluster forks its sentinel, which forks the pusher, the monitor and the workers (again each time it
        # recycles one): they share the loaded application's pages until they write to them, and the cyclic
        # garbage collector writes to every object it examines. Frozen objects are never examined (gunicorn's
        # master does the same before it forks a web worker: langrun/gunicorn_conf.py).
        gc.freeze()
        super().handle(*args, **options)


AUTOGROUP = "/proc/self/autogroup"


def cluster_priority_lower() -> int:
    """Lower this process's CPU priority (and so its children's) by LANGRUN_WORKER_NICE; returns its niceness.

    Where gunicorn and a cluster share a machine, a webhook sender waits for its 202 while a run can wait a
    moment for the CPU. A machine that runs clusters alone loses nothing.

    Linux weighs a niceness only against processes of the same session when it groups sessions
    (autogroup, on by default): a cluster started as a service of its own (systemd, `setsid`) would compete
    with gunicorn's session as an equal. When the cluster leads its own session, the session's group gets
    the same niceness (a container's or a systemd unit's CPU weight is the operator's, not this).
    """
    niceness = os.nice(max(0, settings.LANGRUN_WORKER_NICE))
    if niceness and os.getsid(0) == os.getpid():
        session_group_lower(niceness)
    return niceness


def session_group_lower(niceness: int, patience: float = 2.0) -> None:
    """Give this session's scheduling group `niceness`, where the kernel allows it.

    An unprivileged user may set one group's niceness per 0.1 s on the whole machine (the kernel answers
    EAGAIN in between): clusters started together, as a service manager does, take turns.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            fd = os.open(AUTOGROUP, os.O_WRONLY)
            try:
                os.write(fd, str(niceness).encode())  # raises on EAGAIN, where a file object would return None
            finally:
                os.close(fd)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)
        except OSError:  # no autogroup (another kernel, another OS), or not allowed: the process's niceness still holds
            return
