"""A public suite replayed through the proxy with feedback and background labels (bounded).

A new deployment, as the cold-start setting has it: the ``online`` router's base is
``auto`` fitted on the suite's *other* tasks, and the stream is every row of the held-out
tasks (``--tasks``), shuffled per seed. The router is served in-process under uvicorn with
a SQLite store, learning, and ``--judge`` background labelling at 25 labels per 1,000
queries. The upstream is the loopback stand-in (``tests/standin.py``): each pool model
answers a query with a text naming itself and the row, and the judge stand-in returns that
model's recorded score on the row (rounded to the judge's 0 / 0.5 / 1). Every reply gets
user feedback with the served model's recorded score. Queries are sent one at a time.

Reported per seed: the served utility (``balanced``: 0.5 score - 0.5 normalised cost, from
the record) against best-single (the training rows' best model, what the router starts
from), the best single model over the stream in hindsight, random and the oracle; the
labels bought against their allowance and the background USD spend (stand-in token counts
x the suite's prices) against the daily budget. Beside it, the same policy replayed offline
(:func:`trouter.evaluation.online.replay`: the same router, rows, order, feedback and label
rate, exact scores instead of the judge's rounded ones), and the traffic report's
off-policy estimates of the hindsight best model's mean score (IPS, DR on the router's
predictions, the background labels' mean, DR on the labels) against its true mean, with
how many seeds' intervals hold it.

Usage: ``TROUTER_DATA_DIR=/work/shared/data python scripts/replay_through_proxy.py
[--suite llmrouter --tasks mmlu,gsm8k --seeds 3 --rows 1000] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trouter.evaluation.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
JUDGE = "judge"
KEY_ENV = "REPLAY_KEY"
LABELS_PER_1000 = 25.0
BUDGET_USD = 1.0
ESTIMATORS = ("ips", "dr", "label_mean", "label_dr")
ANSWER = re.compile(r"answer of (.+) to row (\d+)")
MEANS = (
    "served_utility",
    "offline_replay_utility",
    "best_single_trained_utility",
    "best_single_utility",
    "random_utility",
    "oracle_utility",
    "labels",
    "label_spend_usd",
)


def load(suite_name: str, tasks: list[str], rows: int, seed: int):
    """The cold-start fold: train/validation rows of the other tasks, the held-out tasks'
    scorable rows as the stream (shuffled, at most ``rows``)."""
    from trouter.data.suites import load_suite
    from trouter.evaluation.folds import Fold

    suite = load_suite(suite_name)
    unknown = sorted(set(tasks) - set(suite.tasks.tolist()))
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; {suite_name} has {sorted(set(suite.tasks))}")
    held = np.isin(suite.tasks, tasks)
    known = suite.subset(~held & (suite.splits != "test")).with_validation(0.15, seed)
    stream = suite.subset(held & suite.complete_rows)
    stream = stream.subset(np.random.default_rng([seed, 3]).permutation(len(stream))[:rows])
    return Fold("+".join(tasks), known.split("train"), known.split("validation"), stream, 0, 0)


def online_router(fold, seed: int, explore: float = 0.0):
    from trouter.evaluation.online import ENCODER, fit_base
    from trouter.routers.online import OnlineRouter

    base = fit_base("auto", fold, seed)
    return OnlineRouter.around(base, fold.train, fold.validation, encoder=ENCODER,
                               explore=explore)  # fmt: skip


def online_service(fold, seed: int, explore: float):
    from trouter.serving.api import RoutingService

    router = online_router(fold, seed, explore)
    prices = {m.name: (m.input_price_per_mtok, m.output_price_per_mtok) for m in fold.train.models}
    return RoutingService(router, prices=prices)


def pool_for(fit, base_url: str):
    from trouter.llm.pool import ModelEndpoint, Pool

    def endpoint(name: str, prices: tuple) -> ModelEndpoint:
        return ModelEndpoint(name=name, litellm_model=f"openai/{name}", api_base=base_url,
                             api_key_env=KEY_ENV, input_price_per_mtok=prices[0],
                             output_price_per_mtok=prices[1])  # fmt: skip

    models = [endpoint(m.name, (m.input_price_per_mtok or 1.0, m.output_price_per_mtok or 1.0))
              for m in fit.models]  # fmt: skip
    return Pool(models=[*models, endpoint(JUDGE, (1.0, 2.0))])


def responder_for(stream):
    """Pool models name themselves and the row; the judge returns the recorded score."""
    rows = {text: i for i, text in reversed(list(enumerate(stream.texts)))}
    column = {m: j for j, m in enumerate(stream.model_names)}

    def respond(messages, model: str) -> str:
        if model != JUDGE:
            return f"answer of {model} to row {rows.get(messages[-1]['content'], -1)}"
        found = ANSWER.search(messages[-1]["content"].split("Candidate answer:")[1])
        score = stream.performance[int(found[2]), column[found[1]]]
        if np.isnan(score):
            return "no verdict"
        return json.dumps({"score": float(np.round(score * 2) / 2)})

    return respond


def replay(fold, seed: int, explore: float = 0.0) -> dict:
    import httpx
    from standin import StandIn
    from test_proxy import serving

    from trouter.serving.background_settings import BackgroundSettings
    from trouter.serving.learning import FeedbackLoop
    from trouter.serving.proxy import ProxySettings, create_app
    from trouter.store import Store

    fit, stream = fold.train, fold.test
    os.environ[KEY_ENV] = "replay-key-not-secret"
    upstream = StandIn(models=[*fit.model_names, JUDGE], responder=responder_for(stream)).start()
    service = online_service(fold, seed, explore)
    trained_best = service.router.best_single(SCENARIOS["balanced"])
    column = {m: j for j, m in enumerate(stream.model_names)}
    folder = Path(tempfile.mkdtemp(prefix="trouter-replay-"))
    loop = FeedbackLoop(Store.open(f"sqlite:///{folder / 's.db'}"), service, learn=True,
                        fold_interval_s=0.5)  # fmt: skip
    background = BackgroundSettings(JUDGE, BUDGET_USD, label_rate=LABELS_PER_1000)
    app = create_app(service, pool_for(fit, upstream.base_url), ProxySettings(),
                     feedback=loop, background=background)  # fmt: skip
    served, errors, t0 = [], 0, time.perf_counter()
    with serving(app) as base, httpx.Client(timeout=60) as client:
        for i, text in enumerate(stream.texts):
            body = {"model": "trouter-balanced", "messages": [{"role": "user", "content": text}]}
            reply = client.post(f"{base}/v1/chat/completions", json=body)
            if reply.status_code != 200:
                errors += 1
                continue
            model = reply.json()["model"]
            served.append((i, column[model]))
            score = stream.performance[i, column[model]]
            if not np.isnan(score):
                rid = reply.headers["x-trouter-request-id"]
                client.post(f"{base}/v1/feedback", json={"request_id": rid, "score": float(score)})
        wall = time.perf_counter() - t0
        labeller = app.state.background
        while labeller.pending():
            time.sleep(0.2)  # the last background jobs
        metrics = httpx.get(f"{base}/metrics").text
    upstream.stop()
    labels, label_usd = loop.store.label_spend()
    result = summarise(stream, served, errors, wall, labels, label_usd, metrics, trained_best)
    result["offline_replay_utility"] = offline_replay(fold, seed, explore)
    result["off_policy_best_single"] = off_policy_check(loop.store, stream, result)
    return result


def offline_replay(fold, seed: int, explore: float) -> float:
    """The served utility of the same policy replayed offline over the same rows and order."""
    from trouter.evaluation.online import Feedback, replay
    from trouter.evaluation.online_policies import OnlinePolicy
    from trouter.evaluation.scenarios import SCENARIOS
    from trouter.routers.online_labels import LabelBudget

    weights, stream = SCENARIOS["balanced"], fold.test
    router = online_router(fold, seed, explore)
    policy = OnlinePolicy(router, router.features(list(stream.texts), weights), weights, seed)
    order = np.arange(len(stream))
    budget = LabelBudget(rate=LABELS_PER_1000)
    trace = replay(policy, stream, order, weights, Feedback(), budget, seed=seed)
    utility = weights.utility(stream.performance, stream.normalised_cost)
    return round(float(np.nanmean(utility[order, trace["chosen"]])), 4)


def off_policy_check(store, stream, result: dict) -> dict:
    """The report's estimates of the hindsight best model's mean score against its true
    mean over the rows: IPS and DR from the logged decisions, propensities and feedback
    (DR's direct model: the router's predictions), the background labels' mean, and DR
    whose direct model is the labels; and whether each interval holds the truth."""
    from trouter.store.traffic import traffic_report

    name = result["best_single"]
    estimate = traffic_report(store, rounds=1000)["off_policy"]["per_model"].get(name, {})
    truth = float(np.nanmean(stream.performance[:, stream.model_names.index(name)]))
    out = {"model": name, "true_mean_score": round(truth, 4), "support": estimate.get("support"),
           "labels": estimate.get("labels")}  # fmt: skip
    holds = {}
    for method in ESTIMATORS:
        interval = estimate.get(method) or {}
        out[method] = interval
        holds[method] = (
            interval.get("low") is not None and interval["low"] <= truth <= interval["high"]
        )
    return {**out, "holds_truth": holds}


def summarise(stream, served, errors, wall, labels, label_usd, metrics, trained_best) -> dict:
    weights = SCENARIOS["balanced"]
    utility = weights.utility(stream.performance, stream.normalised_cost)
    idx = np.array([i for i, _ in served])
    got = np.nanmean(utility[idx, [j for _, j in served]])
    per_model = np.nanmean(utility[idx], axis=0)
    best = int(np.nanargmax(per_model))
    spend = re.search(r"^trouter_background_spend_usd_total (\S+)$", metrics, re.M)
    return {
        "rows": len(stream),
        "errors": errors,
        "wall_s": round(wall, 1),
        "served_utility": round(float(got), 4),
        "best_single_trained": stream.model_names[trained_best],
        "best_single_trained_utility": round(float(per_model[trained_best]), 4),
        "best_single": stream.model_names[best],
        "best_single_utility": round(float(per_model[best]), 4),
        "oracle_utility": round(float(np.nanmean(np.nanmax(utility[idx], axis=1))), 4),
        "random_utility": round(float(np.nanmean(np.nanmean(utility[idx], axis=1))), 4),
        "served_mean_score": round(
            float(np.nanmean(stream.performance[idx, [j for _, j in served]])), 4
        ),  # fmt: skip
        "labels": labels,
        "label_allowance": LABELS_PER_1000 * len(stream) / 1000,
        "label_spend_usd": round(label_usd, 6),
        "background_spend_usd": round(float(spend[1]), 6) if spend else None,
        "budget_usd_per_day": BUDGET_USD,
    }


def compare(runs: list[dict], within: float = 0.002) -> dict:
    """The proxy against the same policy offline (paired over seeds: mean difference and its
    95% Student-t interval, streams within ``within``), and how many streams passed, met or
    fell below best-single (the training rows' best model, where the router starts)."""
    from serving_stack import t_interval

    diff = np.array([r["served_utility"] - r["offline_replay_utility"] for r in runs])
    gain = np.array([r["served_utility"] - r["best_single_trained_utility"] for r in runs])
    return {
        "proxy_minus_offline": t_interval(diff),
        "streams_proxy_matches_offline": int((np.abs(diff) <= within).sum()),
        "streams_vs_best_single": {"above": int((gain > within).sum()),
                                   "equal": int((np.abs(gain) <= within).sum()),
                                   "below": int((gain < -within).sum())},  # fmt: skip
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="llmrouter")
    parser.add_argument("--tasks", default="mmlu,gsm8k")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--explore", type=float, default=0.0, help="the router's explore share")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    runs = []
    for seed in range(args.seeds):
        fold = load(args.suite, tasks, args.rows, seed)
        runs.append({"seed": seed, **replay(fold, seed, args.explore)})
        print(json.dumps(runs[-1]), flush=True)
    summary = {key: [float(np.mean([r[key] for r in runs])), float(np.std([r[key] for r in runs]))]
               for key in MEANS}  # fmt: skip
    result = {"suite": args.suite, "tasks": tasks, "seeds": args.seeds, "explore": args.explore,
              "mean_std": summary,
              "runs": runs}  # fmt: skip
    summary.update(compare(runs))
    summary["off_policy_holds_truth"] = {
        method: sum(r["off_policy_best_single"]["holds_truth"][method] for r in runs)
        for method in ESTIMATORS
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
