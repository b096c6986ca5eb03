import json

import pytest

from studylib import cli


def test_esa_bins():
    assert [cli.esa_bin(s) for s in (0, 29.9, 30, 59, 60, 100)] == ["0-30", "0-30", "30-60", "30-60", "60-100", "60-100"]
    with pytest.raises(ValueError):
        cli.esa_bin(101)


def test_course_starter_command_writes_a_record_with_esa_bins(tmp_path, capsys):
    rows = [{"langs": "en-de", "line_id": i, "src": f"Sentence number {i}.", "tgt": f"Satz Nummer {i}.",
             "esa_score": s} for i, s in enumerate([10, 45, 80, 95])]
    rows.append({"langs": "en-cs", "line_id": 9, "src": "Hello.", "tgt": "Ahoj.", "esa_score": 70})
    data = tmp_path / "wmt24_esa.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "runs" / "exp1"
    code = cli.main(["run", "--data", str(data), "--outdir", str(out), "--model_id", "tiny-gemma3", "--dtype", "float32",
                     "--device", "cpu", "--eval_metrics", "chrf,bleu", "--max_new_tokens", "6"])
    assert code == 0
    rec = json.loads((out / "record.json").read_text())
    assert set(rec["metrics"]) == {"en-cs", "en-de"}
    bins = rec["metrics"]["en-de"]["esa_bins"]
    assert {k: v["n"] for k, v in bins.items()} == {"0-30": 1, "30-60": 1, "60-100": 2}
    assert rec["params"]["quant"] == "none" and rec["outputs"]["en-de"]["src"][0] == "Sentence number 0."


def test_bad_input_fails_before_loading_a_model(tmp_path, capsys):
    assert cli.main(["run", "--data", str(tmp_path / "nope.jsonl"), "--outdir", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    data = tmp_path / "d.jsonl"
    data.write_text('{"langs": "en-de", "src": "a", "tgt": "b"}\n')
    assert cli.main(["run", "--data", str(data), "--outdir", str(tmp_path / "o"), "--eval_metrics", "ter"]) == 2
    assert "metrics" in capsys.readouterr().err
    assert cli.main(["run", "--data", str(data), "--outdir", str(tmp_path / "o"), "--directions", "en-fr"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["run", "--data", str(data), "--outdir", str(tmp_path / "o"), "--quant", "2bit"])
