"""Commands that are not DVC stages: `promote`, `loop`, `predict`, `serve`, `keys`,
`feedback`, `tune` and `seeds`.

Each module exposes `run(cfg, paths)` (or, per task, `run(cfg, paths, task)` through
`emergent.stages.per_task`) like a stage, and `python -m emergent <name>` dispatches to them
through the same table (`emergent.stages.STAGES`); they live apart from `stages/` because DVC
never runs them: they serve, manage keys, promote, predict, search and repeat stage runs.
"""
