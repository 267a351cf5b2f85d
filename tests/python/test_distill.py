"""hinm.distill on tiny synthetic models: it lowers the student-teacher loss, keeps every mask
(HiNMLinear structure bit-for-bit, exact zeros of plain Linears), ends compressed, rejects bad input."""

import copy

import pytest

torch = pytest.importorskip("torch")

import hinm  # noqa: E402
from hinm import DistillConfig, distill  # noqa: E402
from hinm.nn import HiNMLinear  # noqa: E402


def _teacher(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32),
                               torch.nn.LayerNorm(32), torch.nn.Linear(32, 16))


def _batches(seed=1, count=4):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(48, 32, generator=g) for _ in range(count)]


def _structure(model):
    return {n: {k: v.clone() for k, v in m.sparse_state().items() if k != "values"}
            for n, m in model.named_modules() if isinstance(m, HiNMLinear)}


@pytest.mark.parametrize("config", ["hinm:v16:0.5:2:4", "2:4"])
def test_distill_lowers_loss_and_keeps_compressed_structure(config):
    teacher = _teacher()
    student = copy.deepcopy(teacher)
    hinm.sparsify_(student, config, permute="gyro" if config.startswith("hinm") else "identity",
                   time_budget=0.2, progress=False)
    before = _structure(student)
    assert len(before) == 3
    xs = _batches()
    rep = distill(student, teacher, xs, DistillConfig(steps=15, seconds=None, lr=5e-3), progress=False)
    assert rep.steps == 15 and rep.masked_layers == 3
    assert rep.loss_end < 0.7 * rep.loss_start
    after = _structure(student)
    assert after.keys() == before.keys()
    for name in before:  # same permutation, kept columns and in-group positions: only values moved
        for key in before[name]:
            assert torch.equal(before[name][key], after[name][key]), (name, key)
    # the compressed student is what was trained: held-out loss improves too
    held = _batches(7, 2)
    with torch.no_grad():
        ref = [teacher(x) for x in held]
        fresh = copy.deepcopy(teacher)
        hinm.sparsify_(fresh, config, permute="gyro" if config.startswith("hinm") else "identity",
                       time_budget=0.2, progress=False)
        err = lambda m: sum(float(((m(x) - r) ** 2).sum()) for x, r in zip(held, ref))  # noqa: E731
        assert err(student) < err(fresh)


def test_distill_keeps_exact_zeros_of_plain_linears():
    teacher = _teacher(2)
    student = copy.deepcopy(teacher)
    hinm.sparsify_(student, "unstructured:0.75", compress=False, progress=False)
    zeros = {n: (m.weight == 0).clone() for n, m in student.named_modules() if isinstance(m, torch.nn.Linear)}
    rep = distill(student, teacher, _batches(), DistillConfig(steps=10, seconds=None, lr=5e-3), progress=False)
    assert rep.loss_end < rep.loss_start
    for n, m in student.named_modules():
        if isinstance(m, torch.nn.Linear):
            assert torch.equal(m.weight == 0, zeros[n]), n
    # the teacher is untouched
    for (n, p), q in zip(teacher.named_parameters(), _teacher(2).parameters()):
        assert torch.equal(p, q), n


def test_distill_bad_inputs():
    teacher = _teacher()
    student = copy.deepcopy(teacher)
    with pytest.raises(ValueError, match="steps or seconds"):
        DistillConfig(steps=None, seconds=None, cpu_seconds=None)
    with pytest.raises(ValueError, match="steps"):
        DistillConfig(steps=0)
    with pytest.raises(ValueError, match="cpu_seconds"):
        DistillConfig(cpu_seconds=0.0)
    with pytest.raises(ValueError, match="lr"):
        DistillConfig(lr=-1.0)
    with pytest.raises(ValueError, match="empty"):
        distill(student, teacher, [], DistillConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="same module"):
        distill(teacher, teacher, _batches(), DistillConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="forward failed"):
        distill(student, teacher, [torch.randn(4, 31)], DistillConfig(steps=1), progress=False)
    with pytest.raises(TypeError, match="DistillConfig"):
        distill(student, teacher, _batches(), {"steps": 1}, progress=False)
