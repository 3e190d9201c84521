from __future__ import annotations

import json

from dus_gym.__main__ import main, parse_args


def test_main_job_prints_a_table_and_writes_records(tmp_path, capsys) -> None:
    out = tmp_path / "records.json"
    code = main(["--env-ids", "DUS-Synthetic-v0", "--policies", "uniform", "dus_h", "--seeds", "2",
                 "--n-steps", "2", "--device", "cpu", "--json-out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "DUS-Synthetic-v0 (2 seeds" in text and "branch b" in text and "probe a" in text
    records = json.loads(out.read_text())
    assert [(r["policy"], r["seed"]) for r in records] == [("uniform", 0), ("uniform", 1), ("dus_h", 0), ("dus_h", 1)]
    # the same seed gives every policy the same instance
    assert records[0]["instance"] == records[2]["instance"] != records[1]["instance"]
    assert all(r["steps"] == 2 and r["test"] is not None for r in records)


def test_every_flag_has_help() -> None:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        parse_args(["--help"])
    for flag in ("--env-ids", "--policies", "--seeds", "--n-steps", "--method", "--device", "--json-out"):
        assert flag in buf.getvalue()
    assert "(default: 5)" in buf.getvalue()
