"""``--budget``: parsing, pass, fail, malformed expressions, and the CI exit code."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edgefer.bench.results import Accuracy, BenchResult, LatencyStats, Status
from edgefer.edge.budget import METRICS, Op, Term, check, enforce, parse_budget
from edgefer.errors import BudgetError, ConfigError


def result(p90: float = 2.5, top1: float | None = 0.70, **changes) -> BenchResult:
    latency = LatencyStats(p50=2.0, p90=p90, p99=p90 + 1, mean=2.1, std=0.2, min=1.8,
                           max=p90 + 2, runs=100)
    accuracy = None if top1 is None else Accuracy(
        top1=top1, macro_f1=0.66, per_class={}, confusion=[], classes=(), images=3589)
    base = BenchResult(model="mnv3s-int8", target="tflite", precision="int8", engine="litert",
                       device="ssh://pi5", threads=4, batch=1, latency_ms=latency,
                       accuracy=accuracy, size_bytes=2_000_000, peak_rss_mb=40.0,
                       throughput_ips=450.0, agreement=0.99)
    return replace(base, **changes)


def test_parse():
    budget = parse_budget("p90_ms<=3,top1>=0.69")
    assert budget.terms == (Term("p90_ms", Op.LE, 3.0), Term("top1", Op.GE, 0.69))
    assert str(budget) == "p90_ms<=3,top1>=0.69"


def test_parse_spaces_case_and_all_metrics():
    text = " , ".join(f"{m} < 1e3" for m in METRICS).upper().replace("E3", "e3")
    budget = parse_budget(text)
    assert [t.metric for t in budget.terms] == list(METRICS)
    assert parse_budget(" size_mb < 4.5 , agreement>.98").terms[1] == \
        Term("agreement", Op.GT, 0.98)


def test_pass():
    assert check(parse_budget("p90_ms<=3,top1>=0.69"), [result()]) == []
    enforce(parse_budget("p99_ms<4,size_mb<=2,peak_rss_mb<64,throughput_ips>=400,"
                         "agreement>=0.98,macro_f1>0.6,mean_ms<3,p50_ms<=2"), [result()])


def test_size_mb_is_the_mb_edgefer_prints():
    # 1,696,816 bytes: printed "1.70 MB" (decimal), 1.62 MiB
    shipped = result(size_bytes=1_696_816)
    assert check(parse_budget("size_mb>1.69,size_mb<1.7"), [shipped]) == []


def test_fail():
    results = [result(), result(p90=3.4, top1=0.65, threads=1)]
    violations = check(parse_budget("p90_ms<=3,top1>=0.69"), results)
    assert [(v.term, v.actual) for v in violations] == [("p90_ms<=3", 3.4), ("top1>=0.69", 0.65)]
    assert "1 thread, batch 1" in violations[0].result
    with pytest.raises(BudgetError, match=r"(?s)2 violations.*p90_ms=3.4 misses p90_ms<=3"):
        enforce(parse_budget("p90_ms<=3,top1>=0.69"), results)


def test_latency_terms_check_the_engine_and_call_terms_the_round_trip():
    engine = LatencyStats(p50=1.0, p90=1.2, p99=1.5, mean=1.1, std=0.1, min=0.9, max=2.0,
                          runs=100)
    call = replace(engine, p50=1.6, p90=1.9, p99=2.5, mean=1.7)
    timed = result(latency_ms=engine, call_ms=call)
    assert check(parse_budget("p50_ms<=1.2,p90_ms<1.3,mean_ms<1.2"), [timed]) == []
    violations = check(parse_budget("call_p50_ms<=1.2,call_p90_ms<1.3,call_p99_ms<=2,"
                                    "call_mean_ms<1.2"), [timed])
    assert [v.actual for v in violations] == [1.6, 1.9, 2.5, 1.7]
    unmeasured = check(parse_budget("call_p50_ms<=5"), [result()])
    assert unmeasured[0].message == "call_p50_ms was not measured"


def test_boundaries_strict_and_not():
    assert check(parse_budget("p90_ms<=2.5"), [result()]) == []
    assert len(check(parse_budget("p90_ms<2.5"), [result()])) == 1
    assert len(check(parse_budget("top1>0.70"), [result()])) == 1


def test_unmeasured_metric_fails_the_gate():
    violations = check(parse_budget("top1>=0.69"), [result(top1=None)])
    assert violations[0].message == "top1 was not measured"


def test_failed_and_unavailable_results():
    failed = result(status=Status.FAILED, reason="XNNPACK crashed")
    unavailable = result(status=Status.UNAVAILABLE, device="gpu", latency_ms=None)
    budget = parse_budget("p90_ms<=3")
    assert [v.term for v in check(budget, [failed])] == ["status"]
    assert check(budget, [result(), unavailable]) == []
    assert "no result ran" in check(budget, [unavailable])[0].message
    assert "no result ran" in check(budget, [])[0].message


@pytest.mark.parametrize(("text", "position", "message"), [
    ("", 1, "empty budget"),
    ("p90_ms<=3,", 11, "empty term"),
    ("p90<=3", 1, "unknown metric 'p90'"),
    ("p90_ms", 7, "expected a comparison"),
    ("p90_ms 3", 8, "expected a comparison"),
    ("p90_ms<=", 9, "expected a number"),
    ("p90_ms<=fast", 9, "expected a number"),
    ("p90_ms<=3ms", 10, "unexpected 'm'"),
    ("p90_ms==3", 7, "unsupported comparison '=='"),
    ("top1>=0.69;p90_ms<=3", 11, "unexpected ';'"),
    ("p90_ms<=3,,top1>=1", 11, "empty term"),
    ("p90_ms<=3, <=4", 12, "expected a metric"),
    ("p90_ms<=1e999", 9, "finite"),
])
def test_malformed(text, position, message):
    with pytest.raises(ConfigError) as info:
        parse_budget(text)
    text_of = str(info.value)
    assert message in text_of
    if text:
        assert f"position {position}:" in text_of
        lines = text_of.splitlines()
        assert lines[-1].index("^") - 2 == position - 1  # the caret under the character


def test_cli_local_bench_budget_exit_codes(tiny_tflite, tmp_path):
    from click.testing import CliRunner

    from edgefer.cli import main

    common = ["bench", str(tiny_tflite), "--in-process", "--profile", "rpi4", "--threads", "1",
              "--warmup", "1", "--min-runs", "5", "--min-time", "0.05"]
    runner = CliRunner()
    passed = runner.invoke(main, [*common, "--budget", "p90_ms<=10000"])
    assert passed.exit_code == 0, passed.output
    assert "budget p90_ms<=10000 met by every result" in passed.output
    missed = runner.invoke(main, [*common, "--budget", "mean_ms<0.0000001,top1>=0.69"])
    assert missed.exit_code == 1, missed.output
    assert "misses mean_ms<1e-07" in missed.output
    # with FER2013 found (EDGEFER_FER2013, ../shared/fer2013) the random model's top-1
    # misses; without it, top-1 was not measured: a miss either way
    assert "top1 was not measured" in missed.output or "misses top1>=0.69" in missed.output
    malformed = runner.invoke(main, [*common, "--budget", "p90_ms=<3"])
    assert malformed.exit_code == 1
    assert "malformed budget at position 7" in malformed.output
