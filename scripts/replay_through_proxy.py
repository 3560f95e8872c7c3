"""A public suite replayed through the proxy with feedback and background labels (bounded).

An ``online`` router (base: kNN, k=20, static encoder, on 300 RouterBench training rows) is
served in-process under uvicorn with a SQLite store, learning, and ``--judge`` background
labelling at 25 labels per 1,000 queries. The upstream is the loopback stand-in
(``tests/standin.py``): each pool model answers a query with a text naming itself and the
row, and the judge stand-in returns that model's recorded score on the row (rounded to the
judge's 0 / 0.5 / 1). Every reply then gets user feedback with the served model's recorded
score. Queries are ``--rows`` test rows in a fixed shuffled order, sent one at a time.

Reported: the served utility (``balanced``: 0.5 score - 0.5 normalised cost, from the
record) against the best single model over the same rows, the labels bought against their
allowance, and the background USD spend (stand-in token counts x the suite's prices)
against the daily budget. Beside it, the same policy replayed offline
(:func:`trouter.evaluation.online.replay`: the same router, rows, order, feedback and label
rate, exact scores instead of the judge's rounded ones), and the traffic report's
off-policy estimate of the hindsight best single model's mean score against its true mean.

Usage: ``TROUTER_DATA_DIR=/work/shared/data python scripts/replay_through_proxy.py
[--rows 300] [--json PATH]``
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
JUDGE = "judge"
KEY_ENV = "REPLAY_KEY"
LABELS_PER_1000 = 25.0
BUDGET_USD = 1.0
ANSWER = re.compile(r"answer of (.+) to row (\d+)")


def load(rows: int, seed: int = 0):
    from trouter.data.suites import load_suite

    suite = load_suite("routerbench")
    train, test = suite.split("train"), suite.split("test")
    rng = np.random.default_rng(seed)
    fit = train.subset(np.sort(rng.choice(len(train), 300, replace=False)))
    stream = test.subset(rng.permutation(len(test))[:rows])
    return fit, stream


def online_router(fit):
    from trouter.routers.base import make_router
    from trouter.routers.online import OnlineRouter

    base = make_router("knn", k=20, weighting="uniform", encoder="static").fit(fit)
    return OnlineRouter.around(base, fit)


def online_service(fit):
    from trouter.serving.api import RoutingService

    router = online_router(fit)
    prices = {m.name: (m.input_price_per_mtok, m.output_price_per_mtok) for m in fit.models}
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


def replay(rows: int) -> dict:
    import httpx
    from standin import StandIn
    from test_proxy import serving

    from trouter.serving.background import BackgroundSettings
    from trouter.serving.learning import FeedbackLoop
    from trouter.serving.proxy import ProxySettings, create_app
    from trouter.store import Store

    fit, stream = load(rows)
    os.environ[KEY_ENV] = "replay-key-not-secret"
    upstream = StandIn(models=[*fit.model_names, JUDGE], responder=responder_for(stream)).start()
    service = online_service(fit)
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
    result = summarise(stream, served, errors, wall, labels, label_usd, metrics, rows)
    result["offline_replay_utility"] = offline_replay(fit, stream)
    result["off_policy_best_single"] = off_policy_check(loop.store, stream, result)
    return result


def offline_replay(fit, stream) -> float:
    """The served utility of the same policy replayed offline over the same rows and order."""
    from trouter.evaluation.online import Feedback, replay
    from trouter.evaluation.online_policies import OnlinePolicy
    from trouter.evaluation.scenarios import SCENARIOS
    from trouter.routers.online_labels import LabelBudget

    weights = SCENARIOS["balanced"]
    router = online_router(fit)
    policy = OnlinePolicy(router, router.features(list(stream.texts), weights), weights, 0)
    order = np.arange(len(stream))
    budget = LabelBudget(rate=LABELS_PER_1000)
    trace = replay(policy, stream, order, weights, Feedback(), budget, seed=0)
    utility = weights.utility(stream.performance, stream.normalised_cost)
    return round(float(np.nanmean(utility[order, trace["chosen"]])), 4)


def off_policy_check(store, stream, result: dict) -> dict:
    """The report's IPS and DR estimates of the hindsight best model's mean score (from the
    logged decisions, propensities and feedback) against its true mean over the rows."""
    from trouter.store.traffic import traffic_report

    name = result["best_single"]
    estimate = traffic_report(store, rounds=1000)["off_policy"]["per_model"].get(name, {})
    truth = float(np.nanmean(stream.performance[:, stream.model_names.index(name)]))
    dr = estimate.get("dr", {})
    inside = dr.get("low") is not None and dr["low"] <= truth <= dr["high"]
    return {"model": name, "true_mean_score": round(truth, 4), "support": estimate.get("support"),
            "ips": estimate.get("ips"), "dr": dr, "dr_interval_holds_truth": inside}  # fmt: skip


def summarise(stream, served, errors, wall, labels, label_usd, metrics, rows) -> dict:
    from trouter.evaluation.scenarios import SCENARIOS

    weights = SCENARIOS["balanced"]
    utility = weights.utility(stream.performance, stream.normalised_cost)
    idx = np.array([i for i, _ in served])
    got = np.nanmean(utility[idx, [j for _, j in served]])
    per_model = np.nanmean(utility[idx], axis=0)
    best = int(np.nanargmax(per_model))
    spend = re.search(r"^trouter_background_spend_usd_total (\S+)$", metrics, re.M)
    return {
        "rows": rows,
        "errors": errors,
        "wall_s": round(wall, 1),
        "served_utility": round(float(got), 4),
        "best_single": stream.model_names[best],
        "best_single_utility": round(float(per_model[best]), 4),
        "oracle_utility": round(float(np.nanmean(np.nanmax(utility[idx], axis=1))), 4),
        "random_utility": round(float(np.nanmean(np.nanmean(utility[idx], axis=1))), 4),
        "served_mean_score": round(
            float(np.nanmean(stream.performance[idx, [j for _, j in served]])), 4
        ),  # fmt: skip
        "labels": labels,
        "label_allowance": LABELS_PER_1000 * rows / 1000,
        "label_spend_usd": round(label_usd, 6),
        "background_spend_usd": round(float(spend[1]), 6) if spend else None,
        "budget_usd_per_day": BUDGET_USD,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = replay(min(args.rows, 1000))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
