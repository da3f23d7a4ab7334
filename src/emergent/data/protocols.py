"""What the data layer needs of a task, as typing Protocols.

`emergent.tasks.Task` satisfies both; data sits below the task package, so it names these
instead of importing `Task` (which would close a circle: the task kinds use data's formats and
quality plumbing).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from emergent.schema import TaskDataConfig

Example = dict[str, Any]
Row = dict[str, Any]


class PreparedTask(Protocol):
    """A task as ingest and the quality gate see it: reading, normalising, de-duplicating,
    stratifying and counting its examples, and its quality checks."""

    name: str

    @property
    def example_fields(self) -> tuple[str, ...]:
        """The fields of a prepared example (user feedback's shape); a task kind's constant."""
        ...

    def read(
        self, path: Path, fmt: str, data_cfg: TaskDataConfig, source: str
    ) -> tuple[list[Example], int]: ...

    def detect_format(self, path: Path, configured: str) -> str: ...

    def normalize(
        self, example: Example, normalize_text: Callable[[str], str]
    ) -> Example | None: ...

    def text(self, example: Example) -> str: ...

    def key(self, example: Example) -> Hashable: ...

    def stratify(self, example: Example) -> Hashable | None: ...

    def label_counts(self, examples: Sequence[Example]) -> dict[str, int]: ...

    def quality_checks(
        self, splits: Mapping[str, list[Example]], data_cfg: TaskDataConfig
    ) -> list[Any]: ...


class EncodedTask(Protocol):
    """A task as the fine-tuning data module sees it: its label set, batched encoding and
    padding."""

    name: str

    def labels(self, examples: Sequence[Example]) -> list[str]: ...

    def encode(
        self,
        tokenizer: Any,
        examples: Sequence[Example],
        labels: Sequence[str],
        max_length: int,
        *,
        unknown_labels: str = "error",
        label_all_tokens: bool = False,
    ) -> list[Row]: ...

    def collator(self, tokenizer: Any) -> Callable[[list[Row]], dict[str, Any]]: ...
