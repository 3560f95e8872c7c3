"""The compact README table: one row per router, utilities per scenario, mean ± std."""

from trouter.evaluation.report import compact_markdown, summarise


def _record(router: str, scenario: str, seed: int, utility: float) -> dict:
    return {
        "suite": "s",
        "setting": "in-domain",
        "task": "all",
        "router": router,
        "scenario": scenario,
        "seed": seed,
        "utility": utility,
        "performance": 0.5,
        "cost": 0.1,
        "raw_cost": 1.0,
        "gap_closed": 0.25,
        "aiq": 0.7,
        "selection": {"a": 1.0},
    }


def test_compact_table_has_mean_and_std_over_seeds_per_scenario():
    records = [
        _record("knn", scenario, seed, utility + 0.1 * seed)
        for scenario, utility in (("performance-first", 0.6), ("balanced", 0.3))
        for seed in (0, 1)
    ]
    table = compact_markdown(summarise(records))
    row = next(line for line in table.splitlines() if line.startswith("| knn"))
    assert row == (
        "| knn | 0.650 ± 0.071 | 0.350 ± 0.071 | – | 0.25 ± 0.00 | 0.700 ± 0.000 | – | – |"
    ), "records without cost saved show a dash"
    assert "over 2 seed(s)" in table


def test_a_saving_reached_in_only_some_seeds_says_how_many():
    # Seed 2's router never reaches 95% of the top model's quality (NaN), so the mean is over
    # seeds 0 and 1 only and the cell must say so; every seed reaches 100% of it at 10%.
    records = []
    for seed, saved_95 in enumerate((0.30, 0.20, float("nan"))):
        record = _record("mlp", "balanced", seed, 0.3)
        record.update(cost_saved_95=saved_95, cost_saved_100=0.10)
        records.append(record)
    (row,) = summarise(records)
    assert (row["cost_saved_95_seeds"], row["cost_saved_100_seeds"]) == (2, 3)
    assert round(row["cost_saved_95_mean"], 6) == 0.25
    line = next(x for x in compact_markdown([row]).splitlines() if x.startswith("| mlp"))
    assert line.endswith("| 25% (2 of 3 seeds) | 10% ± 0 |")
