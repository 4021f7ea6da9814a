import json

from conceptspace.cli import main


def test_signal_json_prints_one_object(capsys):
    assert main(["signal", "--json", "--set", "data.image_size=8"]) == 0
    out = capsys.readouterr().out
    assert set(json.loads(out)) == {"color", "size"}
    assert out.count("\n") == 1


def test_data_writes_preview_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["data", "--set", "data.image_size=8", "--out", str(out), "--n-per-class", "2"]) == 0
    assert (out / "preview.png").stat().st_size > 1000
    assert set(json.loads((out / "signal.json").read_text())) == {"signal", "normalized"}
    before = (out / "preview.png").read_bytes()
    assert main(["data", "--set", "data.image_size=8", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "preview.png").read_bytes() == before
    assert main(["data", "--set", "data.image_size=8", "--out", str(out), "--overwrite", "--n-per-class", "1"]) == 0


def test_bad_config_is_one_line_error(capsys):
    assert main(["signal", "--set", "data.concepts.color.sep=0.95"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.concepts.color" in err
