"""django-q2 task entry points. They take ids, and call services."""

from flows.services import flow_run_execute, flow_runs_sweep


def execute_run(run_id: str) -> str | None:
    run = flow_run_execute(run_id=run_id)
    return run.status if run else None


def sweep() -> dict[str, int]:
    return flow_runs_sweep()
