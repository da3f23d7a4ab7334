"""The MLflow model registry and what moves its aliases.

- `versions`: register an exported model with its lineage tags, read the version an alias
  points at, move `champion` (the export stage imports only this module).
- `gate`: the one comparison that decides a promotion: champion and candidate scored by
  their int8 packages on the same examples, with a paired bootstrap interval per example set
  (the `promote` command).
"""
