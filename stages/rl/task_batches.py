"""Task groups (train.task_groups): the prompts of one generation batch all come from one group of tasks.

Why: a batch decodes until its longest answer ends, and the policy's loss pads every completion to the longest one.
In a mixed batch one tracking prompt (an 8-box answer, ~80 tokens here) makes its tg and QA neighbours (~15 tokens)
wait and pad; with tracking in a group of its own they run alone. One group per task is the task-homogeneous
batching that multi-task RL papers try (every step's gradient is one task's). What each does to learning is
measured (docs/base-model.md, eleventh round).

The order is TRL's RepeatSampler's, regrouped: the same seeded permutation of the rows, read front to back, each
row put in its group's open batch; a batch is emitted when it is full, so tasks keep their mixing weights over the
run. Per group, at most batch_size - 1 rows of the permutation's tail are dropped (TRL drops the last incomplete
batch too). Each batch is then repeated as TRL's sampler repeats it (G completions per prompt; steps_per_generation
x num_iterations reuses).
"""
from __future__ import annotations

from trl.trainer.utils import RepeatSampler


def group_labels(tasks: list[str], groups: list[list[str]]) -> list[int]:
    """Each row's group index, from its task."""
    index = {task: g for g, group in enumerate(groups) for task in group}
    missing = sorted(set(tasks) - set(index))
    if missing:
        raise ValueError(f"train.task_groups={groups} puts no group around tasks {missing}")
    return [index[t] for t in tasks]


def grouped_chunks(order: list[int], labels: list, batch_size: int) -> list[list[int]]:
    """The permutation `order` of row indices cut into batches of `batch_size` rows of one label each, in the order
    in which each batch fills up."""
    open_: dict = {}
    chunks = []
    for i in order:
        batch = open_.setdefault(labels[i], [])
        batch.append(i)
        if len(batch) == batch_size:
            chunks.append(batch)
            open_[labels[i]] = []
    return chunks


class GroupedSampler(RepeatSampler):
    def __init__(self, labels: list, **kwargs):
        super().__init__(**kwargs)
        if len(labels) != self.num_samples:
            raise ValueError(f"group labels ({len(labels)}) do not line up with the dataset ({self.num_samples} rows)")
        self.labels = list(labels)

    def _order(self) -> list[int]:
        if self.shuffle:
            import torch

            return torch.randperm(self.num_samples, generator=self.generator).tolist()
        return list(range(self.num_samples))

    def __iter__(self):
        for chunk in grouped_chunks(self._order(), self.labels, self.batch_size):
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        yield index

    def __len__(self) -> int:
        counts: dict = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        full = sum(n // self.batch_size for n in counts.values())
        return full * self.batch_size * self.mini_repeat_count * self.repeat_count
