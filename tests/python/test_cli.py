"""The `hinm` command: user errors give one line on stderr and a non-zero status, no traceback;
`hinm prune` works on a tiny local transformers model and on a .safetensors weights file."""

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from hinm.cli import main  # noqa: E402


def _one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and "error:" in err[0] and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("tiny_bert")
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertModel(cfg).eval().save_pretrained(str(path))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(97, 123)] + \
            [f"w{i}" for i in range(33)]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(str(path))
    return path


@pytest.fixture
def weights_file(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    path = tmp_path / "w.safetensors"
    save_file({"a.weight": torch.randn(16, 32), "a.bias": torch.randn(16), "norm.weight": torch.randn(32)}, str(path))
    return path


def test_user_errors_are_one_line(capsys, tmp_path, weights_file):
    assert "does not exist" in _one_line_error(capsys, ["prune", str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert "n < m" in _one_line_error(capsys, ["prune", str(weights_file), "--config", "5:4", "-o", str(tmp_path / "o")])
    assert "HiNM config" in _one_line_error(capsys, ["prune", str(weights_file), "--config", "hinm:64:2:4",
                                                     "-o", str(tmp_path / "o")])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    assert "cannot read" in _one_line_error(capsys, ["prune", str(bad), "-o", str(tmp_path / "o")])
    assert "no 2-D" in _one_line_error(capsys, ["prune", str(weights_file), "--targets", "norm", "-o", str(tmp_path / "o")])
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    assert "neither" in _one_line_error(capsys, ["prune", str(folder), "-o", str(tmp_path / "o")])


def test_non_linear_target_and_bad_calibration(capsys, tmp_path, tiny_bert):
    msg = _one_line_error(capsys, ["prune", str(tiny_bert), "--targets", "LayerNorm", "--permute", "identity",
                                   "-o", str(tmp_path / "o")])
    assert "matches no nn.Linear" in msg and "LayerNorm" in msg
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert "need --calibration" in _one_line_error(capsys, ["prune", str(tiny_bert), "--distill-steps", "2",
                                                           "-o", str(tmp_path / "o")])
    assert "no non-empty lines" in _one_line_error(capsys, ["prune", str(tiny_bert), "--calibration", str(empty),
                                                            "-o", str(tmp_path / "o")])


def test_prune_folder_and_reload(capsys, tmp_path, tiny_bert):
    import hinm
    import transformers

    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(" ".join("abcdefgh"[(i + j) % 8] for j in range(5 + i % 4)) for i in range(24)))
    out = tmp_path / "out"
    assert main(["prune", str(tiny_bert), "--config", "2:4", "--permute", "identity", "--calibration", str(calib),
                 "--reconstruct", "--distill-steps", "3", "-o", str(out)]) == 0
    result = json.loads((out / "report.json").read_text())
    assert result["distillation"]["steps"] == 3 and result["distillation"]["masked_layers"] == 7
    report = result["report"]
    assert len(report["layers"]) == 7 and report["sequential"]
    assert all(r["error_after"] <= r["error_before"] for r in report["layers"])
    model = hinm.load(out / "model.hinm.safetensors", transformers.AutoModel.from_pretrained(str(tiny_bert)))
    assert isinstance(model.encoder.layer[0].attention.self.query, hinm.nn.HiNMLinear)


def test_prune_weights_file(tmp_path, weights_file):
    import hinm

    out = tmp_path / "out"
    assert main(["prune", str(weights_file), "--config", "2:4", "--permute", "identity", "-o", str(out)]) == 0
    loaded = hinm.load(out / "model.hinm.safetensors")
    assert isinstance(loaded["a.hinm"], hinm.NMTensor) and torch.equal(loaded["a.bias"], _load(weights_file)["a.bias"])
    w = _load(weights_file)["a.weight"]
    cfg = hinm.HiNMConfig(8, 0.5, 2, 4)
    assert main(["prune", str(weights_file), "--config", "hinm:v8:0.5:2:4", "--permute-effort", "fast",
                 "-o", str(tmp_path / "fast")]) == 0
    fast = hinm.load(tmp_path / "fast" / "model.hinm.safetensors")["a.hinm"]
    res = hinm.search_permutation(w, cfg, seed=0, effort="fast")
    assert torch.equal(torch.as_tensor(fast.row_perm), torch.as_tensor(res.row_perm))
    default = hinm.search_permutation(w, cfg, seed=0)  # differs here, so the check above can fail
    assert not torch.equal(torch.as_tensor(default.row_perm), torch.as_tensor(res.row_perm))


def _load(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_console_script_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hinm.cli", "prune", str(tmp_path / "nope"), "-o", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
