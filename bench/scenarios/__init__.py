"""One module per measurement, each a `Scenario` (bench/scenario.py): its run, its targets and
its part of the report."""

from __future__ import annotations

from bench.scenario import Scenario
from bench.scenarios import (
    auth0_budget,
    breakdown,
    budget,
    cache,
    coldstart,
    container,
    endpoints,
    knative,
    stampede,
    telemetry,
    tokens,
    warm,
)

# A full run's order, and the report's whatever order `--only` runs them in.
SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        coldstart.SCENARIO,
        warm.SCENARIO,
        endpoints.SCENARIO,
        breakdown.SCENARIO,
        cache.SCENARIO,
        stampede.SCENARIO,
        budget.SCENARIO,
        auth0_budget.SCENARIO,
        tokens.SCENARIO,
        telemetry.SCENARIO,
        container.SCENARIO,
        knative.SCENARIO,
    )
}
