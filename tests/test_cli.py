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


def _run(tmp_path, *args):
    return cli.main(["run", "--outdir", str(tmp_path / "o"), *args])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err, err
    return err


def test_every_bad_input_is_one_line_naming_the_option_or_file(tmp_path, capsys):
    good = tmp_path / "d.jsonl"
    good.write_text('{"langs": "en-de", "src": "a", "tgt": "b"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    other = tmp_path / "ja.jsonl"
    other.write_text('{"langs": "en-ja", "src": "a", "tgt": "b"}\n')
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"langs": "en-de", "src": "\xe9", "tgt": "b"}\n')
    cases = [
        (["--data", str(empty)], f"{empty}: no examples"),
        (["--data", str(other)], f"{other}: no examples"),
        (["--data", str(latin1)], f"{latin1}: not UTF-8"),
        (["--data", str(tmp_path)], "--data"),
        (["--data", str(good), "--directions", "en-fr,en-de"], "--directions: unknown 'en-fr'"),
        (["--data", str(good), "--directions", "en-cs"], "--directions"),
        (["--data", str(good), "--shots", "9"], "--shots"),
        (["--data", str(good), "--shots", "2", "--prompt_style", "tower"], "--shots"),
        (["--data", str(good), "--prompt_style", "alma-fewshot"], "--prompt_style"),
        (["--data", str(good), "--batch_size", "0"], "--batch_size"),
        (["--data", str(good), "--limit", "0"], "--limit"),
        (["--data", str(good), "--device", "tpu"], "--device"),
        (["--data", str(good), "--model_id", "not a model"], "--model_id"),
        (["--data", str(good), "--eval_metrics", "chrf,ter"], "--eval_metrics"),
        (["--data", str(good), "--shots", "1", "--data_dir", str(tmp_path / "nowhere")], "--data_dir"),
    ]
    for args, expected in cases:
        assert _run(tmp_path, *args) == 2, args
        err = _one_error_line(capsys)
        assert expected in err, (args, err)
        assert "directions must be 'all' or a list" not in err
    for args, option in ((["--data", str(good), "--quant", "2bit"], "--quant"),
                         (["--data", str(good), "--shots", "x"], "--shots"),
                         (["--data", str(good), "--dtype", "float8"], "--dtype")):
        with pytest.raises(SystemExit) as exit_:
            _run(tmp_path, *args)
        assert exit_.value.code == 2 and option in _one_error_line(capsys)


def test_zero_shot_note_only_for_the_plain_alma_prompt():
    note = cli.zero_shot_note("gemma-3-270m", "alma", 0)
    assert "base model" in note and "zero-shot" in note and "--shots" in note and "\n" not in note
    assert "--shots" in cli.zero_shot_note("some/base-model", "alma", 0)
    assert cli.zero_shot_note("tiny-gemma3", "alma-fewshot", 3) is None
    assert cli.zero_shot_note("Unbabel/TowerInstruct-7B-v0.2", "tower", 0) is None


def test_shots_prompt_few_shot_and_base_models_zero_shot_get_a_note(tmp_path, capsys, data_root):
    data = tmp_path / "d.jsonl"
    data.write_text('{"langs": "de-en", "src": "Guten Morgen.", "tgt": "Good morning."}\n')
    common = ["--data", str(data), "--model_id", "tiny-gemma3", "--dtype", "float32", "--device", "cpu",
              "--max_new_tokens", "4"]
    assert cli.main(["run", "--outdir", str(tmp_path / "few"), *common, "--shots", "2", "--data_dir", str(data_root)]) == 0
    assert "zero-shot" not in capsys.readouterr().err
    params = json.loads((tmp_path / "few" / "record.json").read_text())["params"]
    assert (params["shots"], params["prompt_style"]) == (2, "alma-fewshot")
    assert cli.main(["run", "--outdir", str(tmp_path / "zero"), *common]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "tiny-gemma3" in notes[0] and "--shots" in notes[0]
    params = json.loads((tmp_path / "zero" / "record.json").read_text())["params"]
    assert (params["shots"], params["prompt_style"]) == (0, "alma")
