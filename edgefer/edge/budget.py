"""Release budgets over bench results: ``"p90_ms<=3,top1>=0.69"`` -> pass or violations.

A budget is a comma-separated list of terms ``METRIC OP NUMBER``. Every result that ran
(status ok or fallback) must meet every term; a failed result, or a metric the run did not
measure (``top1`` without test data), is a violation too, so a CI gate never passes by
accident. Results whose engine or device is unavailable are skipped.

``p50_ms``... check the engine's latency (``latency_ms``: its run call with the input
bound, as the engines' own benchmark tools time it); ``call_p50_ms``... check the Python
round trip an application makes (``call_ms``).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from edgefer.bench.results import BenchResult, Status
from edgefer.errors import BudgetError, ConfigError


def _latency(name: str, field: str = "latency_ms") -> Callable[[BenchResult], float | None]:
    def value(result: BenchResult) -> float | None:
        stats = getattr(result, field)
        return getattr(stats, name) if stats is not None else None
    return value


def _accuracy(name: str) -> Callable[[BenchResult], float | None]:
    return lambda r: getattr(r.accuracy, name) if r.accuracy is not None else None


METRICS: dict[str, Callable[[BenchResult], float | None]] = {
    "p50_ms": _latency("p50"),
    "p90_ms": _latency("p90"),
    "p99_ms": _latency("p99"),
    "mean_ms": _latency("mean"),
    "call_p50_ms": _latency("p50", "call_ms"),
    "call_p90_ms": _latency("p90", "call_ms"),
    "call_p99_ms": _latency("p99", "call_ms"),
    "call_mean_ms": _latency("mean", "call_ms"),
    "top1": _accuracy("top1"),
    "macro_f1": _accuracy("macro_f1"),
    "size_mb": lambda r: r.size_bytes / 1e6 if r.size_bytes else None,  # MB as printed
    "peak_rss_mb": lambda r: r.peak_rss_mb,
    "throughput_ips": lambda r: r.throughput_ips,
    "agreement": lambda r: r.agreement,
}


class Op(str, Enum):
    LE = "<="
    LT = "<"
    GE = ">="
    GT = ">"

    @property
    def check(self) -> Callable[[float, float], bool]:
        return {Op.LE: operator.le, Op.LT: operator.lt,
                Op.GE: operator.ge, Op.GT: operator.gt}[self]


@dataclass(frozen=True)
class Term:
    metric: str
    op: Op
    limit: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op.value}{self.limit:g}"


@dataclass(frozen=True)
class Budget:
    terms: tuple[Term, ...]
    text: str = ""

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)


@dataclass(frozen=True)
class Violation:
    result: str  # which result: model, engine, device, threads
    term: str  # the budget term it missed, or "status"
    actual: float | None
    message: str


_TERM = re.compile(r"\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)?\s*(?P<op><=|>=|<|>|==|=|!=)?\s*"
                   r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)?\s*")


def _error(text: str, pos: int, message: str) -> ConfigError:
    return ConfigError(f"malformed budget at position {pos + 1}: {message}\n  {text}\n"
                       f"  {' ' * pos}^")


def parse_budget(text: str) -> Budget:
    """Parse ``"p90_ms<=3,top1>=0.69"``; a ConfigError points at the first bad character."""
    if not text or not text.strip():
        raise ConfigError("empty budget: give terms like 'p90_ms<=3,top1>=0.69'")
    terms: list[Term] = []
    start = 0
    for part in text.split(","):
        match = _TERM.match(part)  # always matches: every group is optional
        metric, op, number = match["metric"], match["op"], match["number"]
        if not part.strip():
            raise _error(text, start, "empty term (two commas, or a comma at an end?)")
        if metric is None:
            raise _error(text, start + len(part) - len(part.lstrip()),
                         f"expected a metric, one of {', '.join(METRICS)}")
        if metric.lower() not in METRICS:
            raise _error(text, start + match.start("metric"),
                         f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        if op is None:
            where = match.start("number") if number is not None else match.end()
            raise _error(text, start + where, "expected a comparison (<=, <, >=, >)")
        if op not in {o.value for o in Op}:
            raise _error(text, start + match.start("op"),
                         f"unsupported comparison {op!r}; use <=, <, >= or >")
        if number is None:
            raise _error(text, start + match.end(), "expected a number")
        if match.end() != len(part):
            raise _error(text, start + match.end(),
                         f"unexpected {part[match.end()]!r} after the number")
        limit = float(number)
        if not math.isfinite(limit):
            raise _error(text, start + match.start("number"), "the limit must be finite")
        terms.append(Term(metric.lower(), Op(op), limit))
        start += len(part) + 1
    return Budget(tuple(terms), text)


def result_label(result: BenchResult) -> str:
    return (f"{result.model} [{result.target}/{result.precision} on {result.engine} "
            f"{result.device}, {result.threads} thread{'s' * (result.threads != 1)}, "
            f"batch {result.batch}]")


def check(budget: Budget, results: Iterable[BenchResult]) -> list[Violation]:
    """Every way ``results`` miss ``budget``; empty when they all meet it."""
    violations: list[Violation] = []
    checked = 0
    for result in results:
        if result.status is Status.UNAVAILABLE:
            continue
        label = result_label(result)
        if result.status is Status.FAILED:
            violations.append(Violation(label, "status", None,
                                        f"the run failed: {result.reason or 'no reason given'}"))
            continue
        checked += 1
        for term in budget.terms:
            actual = METRICS[term.metric](result)
            if actual is None:
                violations.append(Violation(label, str(term), None,
                                            f"{term.metric} was not measured"))
            elif not term.op.check(float(actual), term.limit):
                violations.append(Violation(label, str(term), float(actual),
                                            f"{term.metric}={actual:.4g} misses {term}"))
    if checked == 0 and not violations:
        violations.append(Violation("-", "status", None, "no result ran, nothing met the budget"))
    return violations


def enforce(budget: Budget, results: Iterable[BenchResult]) -> None:
    """Raise BudgetError (exit code 1 in the CLI) naming every violation."""
    violations = check(budget, results)
    if violations:
        lines = [f"  {v.result}: {v.message}" for v in violations]
        raise BudgetError(f"budget {budget} missed ({len(violations)} violation"
                          f"{'s' if len(violations) != 1 else ''}):\n" + "\n".join(lines))
