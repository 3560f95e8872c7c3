"""``trouter report traffic`` and ``trouter feedback import`` on a SQLite store of real rows."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from trouter.cli import app
from trouter.data.suites import load_suite
from trouter.store import Decision, Feedback, Store
from trouter.store.off_policy import logged
from trouter.store.traffic import parse_span, traffic_report


@pytest.fixture(scope="module")
def rows():
    """RouterBench test rows with every model's score (the committed fixture cut)."""
    data = load_suite("routerbench")
    test = data.splits == "test"
    perf = data.performance[test]
    keep = ~np.isnan(perf).any(axis=1)
    return data.model_names, perf[keep], data.cost[test][keep]


def _log_uniform(store: Store, rows, seed: int = 0, repeat: int = 1) -> dict[str, float]:
    """A uniformly random logging policy (propensity 1/m) with each row's real score, the
    rows seen ``repeat`` times (a returning query is routed afresh); the predicted
    performance per model is the model's mean (a plain reward model)."""
    names, perf, cost = rows
    perf, cost = np.tile(perf, (repeat, 1)), np.tile(cost, (repeat, 1))
    rng = np.random.default_rng(seed)
    n, m = perf.shape
    now = time.time() - 3600
    predicted = dict(zip(names, perf.mean(axis=0).round(3).tolist(), strict=True))
    decisions, scores = [], []
    for i in range(n):
        j = int(rng.integers(m))
        rid = f"r{i}"
        decisions.append(
            Decision(
                rid,
                now + i,
                now + 86400,
                "random",
                names[j],
                propensity=1 / m,
                explored=True,
                cost_usd=float(cost[i, j]),
                features={"performance": predicted, "cost": {}},
                utilities=predicted,  # the greedy choice: the best mean
            )  # fmt: skip
        )
        scores.append((rid, float(perf[i, j])))
    store.write_decisions(decisions)
    for rid, score in scores:
        store.backend.execute(
            "INSERT INTO feedback (event_id, request_id, score, source, created_at, expires_at) "
            "VALUES (?, ?, ?, 'grader', ?, ?)",
            (rid, rid, score, now + 1, now + 86400),
        )
    return dict(zip(names, perf.mean(axis=0).tolist(), strict=True))


def test_off_policy_estimates_cover_the_true_single_model_utilities(rows, tmp_path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'ope.db'}")
    repeat = -(-3000 // len(rows[1]))  # about 3,000 logged decisions
    truth = _log_uniform(store, rows, repeat=repeat)
    report = traffic_report(store, rounds=1000)
    ope = report["off_policy"]
    assert ope["decisions_with_feedback"] == repeat * len(rows[1])
    covered = {
        method: sum(
            row[method]["low"] <= truth[name] <= row[method]["high"]
            for name, row in ope["per_model"].items()
        )
        for method in ("ips", "dr")
    }
    m = len(truth)  # nominal 95% intervals: one or two of eleven may miss
    assert covered["ips"] >= m - 2 and covered["dr"] >= m - 2, (covered, m)
    best = max(truth, key=truth.get)
    assert ope["best_single"] == best
    dr_best = ope["per_model"][best]["dr"]
    assert dr_best["low"] <= truth[best] <= dr_best["high"]
    greedy = ope["greedy_policy"]["dr"]  # the logged utilities always favour the best model
    assert greedy["low"] <= truth[best] <= greedy["high"]
    assert greedy["mean"] == pytest.approx(dr_best["mean"])
    # DR with a reward model is at least as tight as IPS here
    widths = {
        k: np.mean([r[k]["high"] - r[k]["low"] for r in ope["per_model"].values()])
        for k in ("ips", "dr")
    }
    assert widths["dr"] <= widths["ips"]
    assert report["exploration_share"] == 1.0 and report["feedback_coverage"] == 1.0
    assert abs(sum(r["share"] for r in report["models"].values()) - 1) < 1e-9
    store.close()


def test_report_cli_prints_json_and_a_plot(rows, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = Store.open(url)
    _log_uniform(store, rows)
    store.add_label("l1", {rows[0][0]: 1.0}, spend_usd=0.25)
    store.add_spend("l1:label", "label", 0.25)  # the background ledger, as the proxy keeps it
    store.add_spend("r9:judge", "judge", 0.05)
    store.close()
    runner = CliRunner()
    png = tmp_path / "traffic.png"
    out = runner.invoke(app, ["report", "traffic", "--store", url, "--json", "--plot", str(png),
                              "--rounds", "100"])  # fmt: skip
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["requests"] == len(rows[1]) == report["feedback_events"]
    assert report["spend_usd"] > 0 and report["background_spend_usd"] == pytest.approx(0.30)
    assert report["background_spend_by_kind"] == pytest.approx({"label": 0.25, "judge": 0.05})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = runner.invoke(app, ["report", "traffic", "--store", url, "--rounds", "50"])
    assert table.exit_code == 0 and "doubly robust" in table.output
    bad = runner.invoke(app, ["report", "traffic", "--store", url, "--since", "yesterday"])
    assert bad.exit_code == 2 and "--since" in bad.output


def test_feedback_import_checks_every_line_first(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'imp.db'}"
    store = Store.open(url)
    now = time.time()
    store.write_decisions([Decision(f"r{i}", now, now + 60, "auto", "m") for i in range(3)])
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"request_id": "r0", "score": 1}\n{"request_id": "r1", "thumbs": "down"}\n'
        '{"request_id": "r2", "rating": 5, "source": "judge"}\n{"request_id": "zz", "score": 0}\n'
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"request_id": "r0", "score": 1}\n{"request_id": "r1", "score": 7}\n')
    runner = CliRunner()
    out = runner.invoke(app, ["feedback", "import", str(bad), "--store", url])
    assert out.exit_code == 2 and "bad.jsonl:2" in out.output
    assert store.counts()["feedback"] == 0
    out = runner.invoke(app, ["feedback", "import", str(good), "--store", url])
    assert out.exit_code == 0 and "3 accepted, 0 duplicate, 1 unknown" in out.output
    again = runner.invoke(app, ["feedback", "import", str(good), "--store", url])
    assert "0 accepted, 3 duplicate" in again.output
    assert sorted(s for _, s, _, _ in store.feedback_rows()) == [0.0, 1.0, 1.0]
    assert {src for _, _, src, _ in store.feedback_rows()} == {"grader", "judge"}
    store.close()


def test_spans() -> None:
    assert parse_span("7d") == 7 * 86400 and parse_span("30m") == 1800
    with pytest.raises(ValueError):
        parse_span("7 days")


def test_a_model_never_served_has_no_ips_and_is_not_best_single(tmp_path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'one.db'}")
    now = time.time()
    feats = {"performance": {"cheap": 0.4, "dear": 0.9}, "cost": {}}
    store.write_decisions(
        [Decision(f"d{i}", now, now + 60, "online", "cheap", features=feats) for i in range(20)]
    )
    for i in range(20):
        store.add_feedback(Feedback(f"d{i}", float(i % 2)))
    report = traffic_report(store, rounds=100)
    ope = report["off_policy"]
    assert ope["per_model"]["dear"]["support"] == 0
    assert ope["per_model"]["dear"]["ips"]["mean"] is None
    assert ope["per_model"]["dear"]["dr"]["mean"] == pytest.approx(0.9)  # the prediction alone
    assert ope["best_single"] == "cheap"
    assert report["cells"]["none"]["requests"] == 20
    assert report["cells"]["none"]["models"]["cheap"] == {"feedback": 20, "mean_score": 0.5}
    json.loads(json.dumps(report, allow_nan=False))  # strict JSON: no NaN anywhere
    store.close()


def test_a_candidate_logged_without_a_prediction_is_never_the_greedy_choice(tmp_path) -> None:
    """A model with no prediction has utility -inf in the route; the store writes it as
    null and reads it back as NaN, which must not win the greedy policy's max."""
    store = Store.open(f"sqlite:///{tmp_path / 'g.db'}")
    now = time.time()
    utilities = {"unknown": float("-inf"), "cheap": 0.2, "dear": 0.6}  # NaN first on read
    store.write_decisions(
        [Decision(f"g{i}", now, now + 60, "online", "cheap", utilities=utilities)
         for i in range(10)]  # fmt: skip
    )
    for i in range(10):
        store.add_feedback(Feedback(f"g{i}", 1.0))
    back = [store.decision(f"g{i}") for i in range(10)]
    assert np.isnan(back[0].utilities["unknown"])
    log = logged(back, {d.request_id: 1.0 for d in back})
    assert {log.models[j] for j in log.greedy} == {"dear"}
    # "dear" was never served: the greedy policy's IPS has no support
    assert traffic_report(store, rounds=50)["off_policy"]["greedy_policy"]["ips"]["mean"] == 0.0
    store.close()
