"""The speed measurement behind `hinm demo` and `hinm bench`: both models timed on the same
tokenised batch, the figures that reach report.md, and the bench command's table (tiny shapes)."""

import pytest

torch = pytest.importorskip("torch")

import hinm  # noqa: E402
from hinm import bench_cmd  # noqa: E402
from hinm.demo import _time_forward, render_markdown  # noqa: E402


class _FakeSentenceModel(torch.nn.Module):
    """Takes the feature dict whole, as sentence-transformers models do; counts its calls."""

    def __init__(self, width=8):
        super().__init__()
        self.proj = torch.nn.Linear(width, width)
        self.seen = []

    def preprocess(self, sentences):
        lengths = [len(s.split()) for s in sentences]
        mask = torch.zeros(len(sentences), max(lengths), dtype=torch.long)
        for i, n in enumerate(lengths):
            mask[i, :n] = 1
        return {"input_ids": mask.clone(), "attention_mask": mask}

    def forward(self, features):
        self.seen.append(tuple(features["input_ids"].shape))
        x = features["attention_mask"].float().sum(1, keepdim=True).expand(-1, self.proj.in_features)
        return {"sentence_embedding": self.proj(x)}


def test_time_forward_times_both_models_on_the_same_tokens():
    dense, sparse = _FakeSentenceModel(), _FakeSentenceModel()
    speed = _time_forward(dense, sparse, ["a b c", "d e", "f"], repeats=3)
    assert dense.seen == sparse.seen == [(3, 3)] * 4  # warm-up + 3, one tokenisation
    assert speed["token_rows"] == 9 and speed["real_tokens"] == 6 and speed["repeats"] == 3
    for key in ("dense_ms", "hinm_ms", "dense_cpu_ms", "hinm_cpu_ms", "dense_median_ms", "hinm_median_ms"):
        assert speed[key] >= 0
    assert speed["dense_ms"] <= speed["dense_median_ms"]
    assert speed["speedup"] == pytest.approx(speed["dense_ms"] / speed["hinm_ms"])
    assert hinm.get_num_threads() == torch.get_num_threads()
    hinm.set_num_threads(0)


def test_report_shows_wall_and_cpu_speed():
    speed = dict(dense_ms=300.0, hinm_ms=250.0, speedup=1.2, dense_cpu_ms=590.0, hinm_cpu_ms=480.0,
                 cpu_speedup=590 / 480, repeats=11, hinm_threads=2, variant="hinm75_full", checkpoint="m.safetensors",
                 checkpoint_bytes=61_000_000, reload_bit_exact=True)
    report = dict(hinm="0", torch="2", torch_threads=2, calibration_sentences=1, eval_sentences=2, layers={},
                  results=[], speed=speed, seconds=1.0)
    text = render_markdown(report, [])
    assert "| dense | 300.0 | 1.00× | 590.0 | 1.00× |" in text
    assert "| HiNM 75% (HiNMLinear, hinm75_full) | 250.0 | 1.20× | 480.0 | 1.23× |" in text
    assert "2 threads for torch and hinm alike" in text and "best of 11" in text


def test_bench_command_table(monkeypatch, capsys):
    monkeypatch.setattr(bench_cmd, "SHAPES", [(32, 16)])
    rows = bench_cmd.run_bench(quick=True)
    hinm.set_num_threads(0)
    assert [r["tokens"] for r in rows] == [32, 1024]
    assert all(set(r["speedup"]) == set(bench_cmd.CONFIGS) and min(r["speedup"].values()) > 0 for r in rows)
    assert "32×16" in capsys.readouterr().out
