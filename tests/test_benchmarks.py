"""`benchmarks/official.py`: the one command that gathers ours-vs-official rows (its parsing and docs writing; the
timings themselves need the official checkouts and run as a benchmark, not a test)."""

import json
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def official():
    return load_script(ROOT / "benchmarks" / "official.py")


def test_json_from_finds_the_result_among_other_output(official):
    indented = json.dumps({"op": "decode", "results": {"ours": {"median_s": 1.0}}}, indent=1)
    text = "loading...\n{not json\n" + json.dumps({"first": 1}) + "\n" + indented + "\ndone\n"
    assert official._json_from(text) == {"op": "decode", "results": {"ours": {"median_s": 1.0}}}
    with pytest.raises(ValueError, match="no JSON result"):
        official._json_from("nothing here\n")


@pytest.mark.parametrize("script, result, fidelity", [
    ("wavtokenizer_speed.py", {"zoo": {"median_s": 0.5}, "official": {"median_s": 1.0}, "ids_equal": True,
                               "audio_max_abs_diff": 1e-7}, "ids equal: True"),
    ("gigatok_speed.py", {"results": {"ours": {"median_s": 0.5}, "official": {"median_s": 1.0}},
                          "max_abs_diff_[-1,1]": 2e-5}, "image max abs diff 2.0e-05"),
    ("flextok_speed.py", {"ours_median_s": 0.5, "official_median_s": 1.0, "ids_equal": False}, "ids equal: False"),
])
def test_normalise_gives_one_schema(official, script, result, fidelity):
    row = official.normalise(script, result)
    assert row["speedup"] == pytest.approx(2.0) and row["ours_s"] == 0.5 and row["official_s"] == 1.0
    assert row["fidelity"].startswith(fidelity)


def test_write_docs_replaces_only_between_markers(official, tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"# Title\nbefore\n{official.BEGIN}\nold table\n{official.END}\nafter\n")
    row = {"family": "F", "op": "encode", "input": "1 x 1 s", "threads": 2, "ours_s": 0.5, "official_s": 1.0,
           "speedup": 2.0, "fidelity": "ids equal: True"}
    official.write_docs(page, [row], "how it was measured")
    text = page.read_text()
    assert "old table" not in text and text.startswith("# Title\nbefore\n") and text.endswith("\nafter\n")
    assert "| F | encode | 1 x 1 s | 2 | 0.500 | 1.000 | **2.00x** | ids equal: True |" in text
    assert "how it was measured" in text
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        official.write_docs(bare, [row], "x")


def test_needs_a_checkout(official, capsys):
    with pytest.raises(SystemExit):
        official.main([])
    assert "give at least one official checkout" in capsys.readouterr().err


def test_docs_page_has_the_markers(official):
    text = (ROOT / "docs" / "performance.md").read_text()
    assert text.count(official.BEGIN) == 1 and text.count(official.END) == 1


def test_from_saved_rows_rerenders_without_running(official, tmp_path, capsys):
    raw = {"ours_median_s": 2.0, "official_median_s": 3.0, "ids_equal": True}
    saved = tmp_path / "rows.jsonl"
    saved.write_text(json.dumps({"family": "FlexTok d12-d12", "op": "tokenize", "input": "1 x 256 px", "threads": 1,
                                 "raw": raw}) + "\n")
    page = tmp_path / "page.md"
    page.write_text(f"{official.BEGIN}\n{official.END}\n")
    assert official.main(["--from", str(saved), "--write-docs", str(page)]) == 0
    assert "**1.50x**" in capsys.readouterr().out and "**1.50x**" in page.read_text()


def test_threads_option_overrides_every_row_and_is_in_the_header(official, tmp_path, monkeypatch, capsys):
    seen = []

    def fake_row(script, args, threads, checkout, runs):
        seen.append(threads)
        return {"zoo": {"median_s": 1.0}, "official": {"median_s": 1.5}, "ids_equal": True, "audio_max_abs_diff": 0.0}

    monkeypatch.setattr(official, "run_row", fake_row)
    page = tmp_path / "page.md"
    page.write_text(f"{official.BEGIN}\n{official.END}\n")
    assert official.main(["--wavtokenizer", str(tmp_path), "--threads", "1", "--write-docs", str(page)]) == 0
    wavtokenizer_rows = [r for r in official.ROWS if r[1] == "wavtokenizer_speed.py"]
    assert seen == [1] * len(wavtokenizer_rows) and any(r[4] == 2 for r in wavtokenizer_rows)
    text = page.read_text()
    assert "--threads 1`" in text and "| 1 | 1.000 | 1.500 | **1.50x** |" in text
    seen.clear()
    official.main(["--wavtokenizer", str(tmp_path)])  # without it, each row keeps the table's thread count
    assert seen == [r[4] for r in wavtokenizer_rows]
    with pytest.raises(SystemExit):
        official.main(["--wavtokenizer", str(tmp_path), "--threads", "0"])
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------- the prepared GPU session

def test_gpu_session_records_errors_skips_past_the_budget_and_writes_the_tables(tmp_path):
    gpu = load_script(ROOT / "benchmarks" / "gpu_session.py")
    session = gpu.Session(tmp_path, budget_s=60.0)
    assert session.run("speed", "broken", lambda: 1 / 0)["error"].startswith("ZeroDivisionError")
    fidelity = {"model": "m", "precision": "bf16", "ids_agreement": 0.97, "psnr_fp32": 20.0, "psnr_bf16": 19.9,
                "encode_speedup": 1.8, "decode_speedup": 2.1}
    session.run("fidelity", "m bf16", lambda: fidelity)
    table = {f"b{b}_{p}": {"encode_items_per_s": 10.0 * m, "decode_items_per_s": 5.0 * m}
             for b in (1, 8) for p, m in (("fp32", 1), ("bf16", 2), ("fp16", 3))}
    session.run("speed", "r", lambda: {"model": "r", "table": table})
    session.budget_s = 0.0
    assert session.run("compile", "late", lambda: {}) is None and session.skipped == ["compile: late"]
    rows = [json.loads(line) for line in session.rows_path.read_text().splitlines()]
    assert [r["label"] for r in rows] == ["broken", "m bf16", "r"]
    text = gpu.markdown(rows, "device line", session.skipped)
    assert "| m | bf16 | 97.0 % | psnr 20.000 -> 19.900 | 1.80x / 2.10x |" in text
    assert "| r | 8 | 10.00 / 5.00 | 2.00x / 2.00x | 3.00x / 3.00x |" in text
    assert "speed broken: ZeroDivisionError" in text and "- compile: late" in text


def test_gpu_session_refuses_cuda_without_a_gpu(monkeypatch):
    gpu = load_script(ROOT / "benchmarks" / "gpu_session.py")
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        gpu.main(["--out", "unused", "--device", "cuda"])


def test_decode_kwargs_give_steps_only_to_decoders_that_take_them():
    import torch

    import zoo
    from zoo.bench import decode_kwargs_for

    flow, plain = zoo.load("flextok-tiny", weights=None), zoo.load("gigatok-tiny", weights=None)
    kwargs = decode_kwargs_for(flow, 0, None, steps=8)
    assert kwargs["steps"] == 8 and isinstance(kwargs["generator"], torch.Generator)
    assert "steps" not in decode_kwargs_for(flow, 0, None)  # None: the decoder's own default
    assert decode_kwargs_for(plain, 0, None, steps=8) == {}
