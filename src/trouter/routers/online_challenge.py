"""The online router's test on served traffic: the base's proposal against the anchor, A/B.

Until the base has earned its choices the router serves the anchor, and served feedback on
the anchor says nothing about the alternatives. With ``challenge`` = s > 0, on the queries
where the base's proposal (what the router would serve with the anchor lifted) differs
from the anchor, a share s drawn at random is served the proposal (arm *treat*) and the rest
the anchor (arm *control*). The draw ignores the query, so each arm's mean served utility
estimates its policy's value on those queries without bias, and the served feedback of the
two arms compares them: Welch's test with Student's t, one-sided at half the labels' error
rate, looked at only when the treat arm's feedback reaches ``first_look`` x 2^k events, the
k-th look at alpha / 2^(k+2) (as the label tests: online_tests.look); the outcome stands
between looks. It passes when the gain per drawn query is above ``challenge_margin`` at
that level; a look that finds the proposals behind (a gain at or below zero) ends the draw
for those weights, so that a base worse than the anchor costs about ``first_look`` drawn
queries' loss, not a share of the stream. Once it passes, the base has earned its
choices as if the labels had shown it, unless the background labels rule it out; once
they do, nothing more is drawn.

What exploring costs is bounded by the base itself: the share times what its proposals
lose, on the queries where they differ. The share adapts: it is ``challenge`` times the
chance that the proposals are ahead, on the arms' feedback so far (a half before any) or on
the background labels, whichever is lower, so proposals that lose stop being drawn after a
few draws. Statistics are kept per policy
weights (the first :data:`MAX_POLICIES` seen), discounted like every other (``half_life``), in
:class:`~trouter.routers.online_stats.EvidenceStats`'s ``arms`` array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import ndtr

from trouter.evaluation.scenarios import Weights
from trouter.routers.online_posterior import Decisions, decide
from trouter.routers.online_stats import MAX_POLICIES
from trouter.routers.online_tests import (
    GAIN_PRIOR_COUNT,
    GAIN_PRIOR_VAR,
    bounds,
    first_look,
    look,
)

#: Arm codes of a decision: not in the test, served the anchor, served the proposal.
NO_ARM, CONTROL, TREAT = 0, 1, 2
ARM_NAMES = {CONTROL: "control", TREAT: "treat"}


def arm_fields(made: Decisions, i: int, weights: Weights) -> dict[str, Any]:
    """What a decision record says of query ``i``'s arm (none where it has no arm): the
    served event must carry it back for :meth:`ChallengeTests._learn_arm`."""
    arm = None if made.arm is None else ARM_NAMES.get(int(made.arm[i]))
    if arm is None:
        return {}
    # the keys of trouter.store.records.ARM_FEATURES (the store's layer sits below this one)
    return {"ab_arm": arm, "ab_policy": [weights.performance, weights.cost]}


def arm_moments(
    weights: Weights,
    moments: np.ndarray,
    prior_var: float = GAIN_PRIOR_VAR,
    prior_count: float = GAIN_PRIOR_COUNT,
) -> tuple[float, float, float]:
    """(mean utility, variance of the mean, weight) of one arm's moments
    ``[n, perf, cost, perf^2, cost^2, perf*cost]`` (sums), its variance shrunk towards
    ``prior_var`` with ``prior_count`` pseudo-events, as the label tests' paired gains are
    (a handful of 0/1 scores estimate their own spread poorly)."""
    n, sp, sc, spp, scc, spc = (float(v) for v in moments)
    if n <= 0:
        return 0.0, np.inf, 0.0
    wp, wc = weights.performance, weights.cost
    mean = (wp * sp + wc * sc) / n
    second = (wp * wp * spp + wc * wc * scc + 2 * wp * wc * spc) / n
    centred = max(second - mean * mean, 0.0)
    variance = (n * centred + prior_count * prior_var) / (n + prior_count)
    return mean, variance / n, n


def _chance_ahead(gain: float, spread: float) -> float:
    """The normal chance that a gain estimated at ``gain`` +/- ``spread`` is positive (a
    half with no estimate)."""
    if not np.isfinite(spread) or spread <= 0:
        return 0.5
    return float(ndtr(gain / spread))


class ChallengeTests:
    """The served-traffic test of :class:`~trouter.routers.online.OnlineRouter` (a mixin:
    it reads the router's statistics and parameters and keeps its own state arrays)."""

    def _init_challenge(self) -> None:
        self.ab_policies_ = np.full((MAX_POLICIES, 2), np.nan)
        self.ab_treated_ = np.zeros(MAX_POLICIES)  # treat-arm feedback events, undiscounted
        self.ab_looks_ = np.zeros(MAX_POLICIES)  # looks taken
        self.ab_passed_ = np.zeros(MAX_POLICIES)  # the last look's outcome
        self.ab_futile_ = np.zeros(MAX_POLICIES)  # 1: a look found the proposals behind

    def _policy_slot(self, weights: tuple[float, float], add: bool) -> int | None:
        """The statistics slot of policy ``weights`` (a new one with ``add``; None when
        unknown, or when every slot is taken)."""
        key = np.asarray(weights, dtype=float)
        known = np.flatnonzero(np.all(np.isclose(self.ab_policies_, key), axis=1))
        if len(known):
            return int(known[0])
        free = np.flatnonzero(np.isnan(self.ab_policies_[:, 0]))
        if not add or not len(free):
            return None
        self.ab_policies_ = self.ab_policies_.copy()
        self.ab_policies_[free[0]] = key
        return int(free[0])

    def challenge_earned(self, weights: Weights) -> bool:
        """Whether the served-traffic test has shown the proposals ahead of the anchor."""
        slot = self._policy_slot((weights.performance, weights.cost), add=False)
        return slot is not None and bool(self.ab_passed_[slot])

    def earned(self, weights: Weights) -> bool:
        """Whether the base may serve its own choices: shown ahead of the anchor by the
        background labels, or by the served A/B test unless the labels rule it out (paired
        on the same queries, they are the stronger evidence)."""
        if self.base_earned(weights):
            return True
        return self.challenge_earned(weights) and not self.base_ruled_out(weights)

    def challenged(
        self,
        made: Decisions,
        features: dict[str, np.ndarray],
        weights: Weights,
        anchor: int,
        rng: np.random.Generator | None,
    ) -> Decisions:
        """``made`` (the anchored decisions for queries with ``features``) with the A/B draw
        applied where the proposal differs from the anchor, each query's arm in ``arm``."""
        if float(self.params.get("challenge", 0.0)) <= 0 or rng is None:
            return made
        if self.base_ruled_out(weights):  # the labels have answered what the draw asks
            return made
        proposal = decide(self.stats_, features, weights, self.rule).exploit
        arms = np.zeros(len(made.chosen), dtype=int)
        differs = (proposal != anchor) & (made.chosen == anchor) & ~made.explored
        # the share only where some query could be drawn; 0 once a look found them behind
        share = self.challenge_share(weights) if differs.any() else 0.0
        if share <= 0:
            made.arm, made.proposal = arms, proposal
            return made
        rows = np.arange(len(arms))
        treat = differs & (rng.random(len(arms)) < share)
        arms[differs] = CONTROL
        arms[treat] = TREAT
        probabilities = made.probabilities.copy()
        probabilities[differs] *= 1.0 - share
        probabilities[rows[differs], proposal[differs]] += share
        chosen = np.where(treat, proposal, made.chosen)
        return Decisions(
            chosen, probabilities[rows, chosen], probabilities, made.explored | treat,
            made.mean, made.exploit, made.guard, made.overlap, arms, proposal,
        )  # fmt: skip

    def challenge_share(self, weights: Weights) -> float:
        """The draw's share now: ``challenge`` times the chance that the proposals beat the
        anchor, on the arms' feedback so far (a half before any) or on the background
        labels, whichever finds it lower, so that proposals either finds worse stop costing
        traffic after a few draws."""
        share = float(self.params["challenge"])
        slot = self._policy_slot((weights.performance, weights.cost), add=False)
        if slot is not None and self.ab_futile_[slot]:
            return 0.0
        chance = 0.5 if slot is None else _chance_ahead(*self._arm_gain(slot, weights)[:2])
        labelled = 1.0  # no labels: no objection
        if len(self.label_time_):
            labelled = self._memo("label-chance", weights, len(self.label_time_),
                                  lambda: _chance_ahead(*self.base_gain(weights)[:2]))  # fmt: skip
        return share * min(chance, labelled)

    def _arm_gain(self, slot: int, weights: Weights) -> tuple[float, float, float, float]:
        """(treat minus control mean utility, its standard error, treat weight, control
        weight) of the arms of ``slot``."""
        treat = arm_moments(weights, self.stats_.arms[slot, 1])
        control = arm_moments(weights, self.stats_.arms[slot, 0])
        spread = float(np.sqrt(treat[1] + control[1]))
        return treat[0] - control[0], spread, treat[2], control[2]

    def _learn_arm(self, event: dict[str, Any], perf: float, cost: float, weight: float) -> None:
        """One served event of the A/B test (its decision's ``ab_arm`` and ``ab_policy``)."""
        arm = {"control": CONTROL, "treat": TREAT}.get(str(event.get("ab_arm")))
        policy = event.get("ab_policy")
        if arm is None or policy is None or len(policy) != 2:
            return
        slot = self._policy_slot((float(policy[0]), float(policy[1])), add=True)
        if slot is None:
            return
        moments = np.array([1.0, perf, cost, perf * perf, cost * cost, perf * cost])
        self.stats_.arms[slot, arm - 1] += weight * moments
        if arm == TREAT:
            self.ab_treated_ = self.ab_treated_.copy()
            self.ab_treated_[slot] += 1
            self._look_at_arms(slot)

    def _look_at_arms(self, slot: int) -> None:
        """Test the arms of ``slot`` when its treat count reaches the next look."""
        looks = int(self.ab_looks_[slot])
        first = first_look(self.params)
        if self.ab_treated_[slot] < first * 2**looks:
            return
        # half the labels' error rate, and Student's t: two unpaired arms of a few dozen
        # 0/1 scores estimate their spread poorly, and a false pass hands over the traffic
        alpha = (1.0 - self.params["confidence"]) / 2
        strict = {**self.params, "looks": "doubling", "confidence": 1.0 - alpha,
                  "label_plan": None}  # fmt: skip
        _, at = look(first * 2**looks, {**strict, "student_t": True})
        gain, spread, treated, controls = self._arm_gain(slot, Weights(*self.ab_policies_[slot]))
        # challenge_margin: a switch that gains little per query it changes is as likely
        # to lose a stretch of traffic by chance as to win it (see docs/online.md)
        margin = max(at["margin"], float(at.get("challenge_margin", 0.0)))
        passed = controls >= at["min_evidence"] and bounds((gain, spread, treated), at)[0] > margin
        self.ab_looks_, self.ab_passed_ = self.ab_looks_.copy(), self.ab_passed_.copy()
        self.ab_looks_[slot] += 1
        self.ab_passed_[slot] = float(passed)
        if gain <= 0:  # behind at a look: the draw ends (stopping costs no safety)
            self.ab_futile_ = self.ab_futile_.copy()
            self.ab_futile_[slot] = 1.0
        self._cached = {}
