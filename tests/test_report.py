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
