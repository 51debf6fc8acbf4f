"""train.task_groups: every generation batch is one group's, the run keeps the tasks' shares, and the order is
TRL's seeded permutation regrouped (stages/rl/task_batches.py)."""
from collections import Counter

import pytest
import torch
from trl.trainer.utils import RepeatSampler

from stages.params import load_params
from stages.rl.task_batches import GroupedSampler, group_labels, grouped_chunks


def test_chunks_fill_in_the_order_of_the_permutation():
    tasks = ["tg", "qa", "tg", "tracking", "qa", "tg", "tracking", "tg", "qa"]
    order = [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert grouped_chunks(order, tasks, 2) == [[0, 2], [1, 4], [3, 6], [5, 7]]  # qa's 8 is left over


def _sampler(tasks, groups=None, **kw):
    groups = groups or [[t] for t in sorted(set(tasks))]
    return GroupedSampler(labels=group_labels(tasks, groups), data_source=list(range(len(tasks))), mini_repeat_count=kw.get("g", 4),
                           batch_size=kw.get("bs", 2), repeat_count=kw.get("repeat", 1), seed=kw.get("seed", 0))


def test_each_batch_is_one_task_with_every_prompt_repeated_g_times():
    tasks = ["tracking"] * 30 + ["tg"] * 20 + ["qa"] * 5 + ["gqa"] * 5
    s = _sampler(tasks, g=4, bs=2)
    out = list(s)
    assert len(out) == len(s) == (15 + 10 + 2 + 2) * 2 * 4
    for b in range(0, len(out), 8):  # one generation batch: 2 prompts x G
        batch = out[b:b + 8]
        assert len({tasks[i] for i in batch}) == 1
        assert batch[:4] == [batch[0]] * 4 and batch[4:] == [batch[4]] * 4 and batch[0] != batch[4]
    prompts = Counter(tasks[i] for i in out[::4])
    assert prompts == {"tracking": 30, "tg": 20, "qa": 4, "gqa": 4}  # shares kept; odd tails dropped


def test_same_seed_same_order_and_the_permutation_is_trls():
    tasks = [["tg", "qa", "tracking"][i % 3] for i in range(24)]
    assert list(_sampler(tasks, seed=3)) == list(_sampler(tasks, seed=3))
    assert list(_sampler(tasks, seed=3)) != list(_sampler(tasks, seed=4))
    trl = RepeatSampler(list(range(24)), mini_repeat_count=1, batch_size=1, seed=3)
    perm = list(trl)
    expected = [i for chunk in grouped_chunks(perm, tasks, 2) for i in chunk]
    assert list(_sampler(tasks, g=1, bs=2, seed=3)) == expected
    assert perm == torch.randperm(24, generator=torch.Generator().manual_seed(3)).tolist()


def test_repeat_count_reuses_a_batch_before_the_next():
    tasks = ["tg"] * 4
    out = list(_sampler(tasks, g=1, bs=2, repeat=2))
    assert out[:2] == out[2:4] and out[4:6] == out[6:8] and set(out[:2]) != set(out[4:6])


def test_tracking_apart_keeps_the_short_answers_together():
    tasks = ["tracking", "tg", "qa", "gqa"] * 6
    out = list(_sampler(tasks, groups=[["tracking"], ["tg", "gqa", "qa"]], g=1, bs=2))
    pairs = [{tasks[i] for i in out[b:b + 2]} for b in range(0, len(out), 2)]
    assert all(p == {"tracking"} or "tracking" not in p for p in pairs)
    assert any(len(p) > 1 for p in pairs)  # tg, gqa and qa do share batches


def test_labels_must_line_up_and_groups_cover_the_tasks():
    with pytest.raises(ValueError, match="do not line up"):
        GroupedSampler(labels=[0], data_source=[0, 1], mini_repeat_count=2)
    with pytest.raises(ValueError, match="no group around tasks"):
        group_labels(["tg", "qa"], [["tg"]])
    with pytest.raises(ValueError, match="exactly one non-empty group"):
        load_params("no-such-params.yaml", ["train.task_groups=[[tracking], [tg, qa]]"])  # gqa is trained too
    with pytest.raises(ValueError, match="exactly one non-empty group"):
        load_params("no-such-params.yaml", ["train.task_groups=[[tracking, tg], [tg, gqa, qa]]"])  # tg twice
    p = load_params("no-such-params.yaml", ["train.tasks=[tg, qa]", "train.task_groups=[[tg], [qa, stvg]]"])
    assert p.train.task_groups == [["tg"], ["qa", "stvg"]]  # a group may name a task this run does not train
