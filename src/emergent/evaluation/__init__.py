"""Evaluation: predictions of any forward function, bootstrap intervals, plots (a task's metrics
and error reports are the task's own: `emergent.tasks.metrics`, `emergent.tasks.error_reports`)."""
