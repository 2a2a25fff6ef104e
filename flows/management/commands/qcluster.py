"""`qcluster`: django-q2's command, lowering the cluster's CPU priority first when LANGRUN_WORKER_NICE says so.

It takes precedence over django-q2's own command because `flows` comes before `django_q` in INSTALLED_APPS.
"""

import os

from django.conf import settings
from django_q.management.commands.qcluster import Command as QClusterCommand


class Command(QClusterCommand):
    help = QClusterCommand.help + " The cluster first lowers its CPU priority by LANGRUN_WORKER_NICE (os.nice)."

    def handle(self, *args, **options):
        cluster_priority_lower()
        super().handle(*args, **options)


def cluster_priority_lower() -> int:
    """Lower this process's CPU priority (and so its children's) by LANGRUN_WORKER_NICE; returns its niceness.

    Where gunicorn and a cluster share a machine, a webhook sender waits for its 202 while a run can wait a
    moment for the CPU. A machine that runs clusters alone loses nothing.
    """
    return os.nice(max(0, settings.LANGRUN_WORKER_NICE))
