"""Build a task taxonomy with a generator LLM, level by level, resumably.

Levels: domains -> subcategories of each domain -> difficulty levels of each subcategory ->
(optional) user preferences. Each node set comes from the same loop: *generate* a set,
then per round *critique and revise* it and let the LLM *choose* between the current and the
revised set (presented in a seeded random order, so position bias cannot systematically
favour either), keeping the winner; the loop stops when the set stayed the same for two
consecutive rounds or at the round cap. A revision identical to the current set counts as
unchanged without a choice call.

Preferences are built once per subcategory and attached to each of its difficulty levels:
what a user wants from an answer (brevity, steps, format) depends on the kind of task, not
on its difficulty, and a loop per leaf would multiply the cost by the number of levels.

Every finished node set is written to a checkpoint file, so a killed run resumes where it
stopped (and the LLM client's disk cache makes replayed calls free).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trouter.synthesis.budget import CallCounter, CostMeter, Progress, SilentProgress
from trouter.synthesis.checkpoint import Checkpoint, CheckpointError
from trouter.synthesis.llmjson import ask_json
from trouter.taxonomy import prompts
from trouter.taxonomy.inputs import (
    MAX_EXAMPLE_CHARS,
    MAX_EXAMPLES,
    TaxonomyBuildError,
    parse_domain_arg,
)
from trouter.taxonomy.model import MAX_CHILDREN, SEPARATOR, TaskProfile, Taxonomy, TaxonomyNode
from trouter.taxonomy.prompts import LevelSpec, parse_choice, parse_node_set, same_nodes


@dataclass
class LoopRecord:
    """How one node set was refined: rounds run, calls made, whether it converged."""

    label: str
    rounds: int
    calls: int
    converged: bool
    order: list[str] = field(default_factory=list)  # per choice: "revised-first"/"current-first"


@dataclass
class BuildSettings:
    """Caps and knobs of a build; together with the inputs they key the checkpoint."""

    max_domains: int = 10
    max_subcategories: int = 10
    max_difficulties: int = 5
    include_preferences: bool = False
    max_preferences: int = 6
    max_rounds_upper: int = 10
    max_rounds_lower: int = 5
    seed: int = 0
    temperature: float = 0.5
    concurrency: int = 8

    def check(self) -> None:
        limits = {
            "max_subcategories": (self.max_subcategories, MAX_CHILDREN[0]),
            "max_difficulties": (self.max_difficulties, MAX_CHILDREN[1]),
            "max_preferences": (self.max_preferences, MAX_CHILDREN[2]),
        }
        for name, (value, cap) in limits.items():
            if not 1 <= value <= cap:
                raise TaxonomyBuildError(f"{name}={value}: must be between 1 and {cap}")
        if self.max_difficulties < 2:
            raise TaxonomyBuildError("max_difficulties must be at least 2 (an ordered scale)")
        if self.max_domains < 1 or self.max_rounds_upper < 1 or self.max_rounds_lower < 1:
            raise TaxonomyBuildError("max_domains and the round caps must be at least 1")


# ----- the loop -----------------------------------------------------------------------------
class TaxonomyBuilder:
    """Runs the generate -> critique/revise -> choose loop for every node set of a taxonomy."""

    def __init__(
        self,
        client: Any,
        endpoint: Any,
        settings: BuildSettings,
        *,
        meter: CostMeter | None = None,
        progress: Progress | None = None,
        checkpoint: Path | None = None,
        fingerprint: str = "",
    ) -> None:
        settings.check()
        self.client = client
        self.endpoint = endpoint
        self.settings = settings
        self.meter = meter or CostMeter()
        self.progress = progress or SilentProgress()
        try:
            self.state = Checkpoint(checkpoint, fingerprint)
        except CheckpointError as err:
            raise TaxonomyBuildError(str(err)) from None
        self._slots = asyncio.Semaphore(settings.concurrency)
        self.records: list[LoopRecord] = []  # loops run (not resumed) in this process

    async def _call_json(
        self, meter: CallCounter, messages, parse: Callable[[Any], Any], what: str, schema, temp
    ) -> Any:
        return await ask_json(
            self.client,
            self.endpoint,
            messages,
            parse=parse,
            what=what,
            meter=meter,
            temperature=temp,
            schema=("taxonomy_reply", schema),
        )

    async def _node_set(
        self, meter: CallCounter, spec: LevelSpec, messages, what: str, schema
    ) -> list[TaskProfile]:
        nodes, notes = await self._call_json(
            meter,
            messages,
            lambda data: parse_node_set(spec, data),
            what,
            schema,
            self.settings.temperature,
        )
        for note in notes:
            self.progress.note(note)
        return nodes

    async def refine(self, spec: LevelSpec, max_rounds: int) -> list[TaskProfile]:
        """One node set through the loop; cached in the checkpoint under its level and path."""
        key = f"{spec.level}|{spec.where}"
        if key in self.state.items:
            return [TaskProfile(**n) for n in self.state.items[key]]
        async with self._slots:
            rng = random.Random(f"{self.settings.seed}|{key}")
            meter = CallCounter(self.meter)
            record = LoopRecord(label=spec.label, rounds=0, calls=0, converged=False)
            current = await self._node_set(
                meter,
                spec,
                prompts.generate_messages(spec),
                f"generating the {spec.label}",
                prompts.NODE_SCHEMA,
            )
            unchanged = 0
            for round_index in range(1, max_rounds + 1):
                record.rounds = round_index
                revised = await self._node_set(
                    meter,
                    spec,
                    prompts.critique_messages(spec, current, round_index),
                    f"revising the {spec.label} (round {round_index})",
                    prompts.REVISION_SCHEMA,
                )
                if same_nodes(revised, current):
                    unchanged += 1
                else:
                    revised_first = rng.random() < 0.5
                    record.order.append("revised-first" if revised_first else "current-first")
                    first, second = (revised, current) if revised_first else (current, revised)
                    letter = await self._call_json(
                        meter,
                        prompts.choose_messages(spec, first, second),
                        parse_choice,
                        f"choosing the {spec.label} (round {round_index})",
                        prompts.CHOICE_SCHEMA,
                        0.0,
                    )
                    if (letter == "A") == revised_first:
                        current, unchanged = revised, 0
                    else:
                        unchanged += 1
                if unchanged >= 2:
                    record.converged = True
                    break
            record.calls = meter.calls
            if not record.converged:
                self.progress.note(
                    f"{spec.label}: not stable after {max_rounds} rounds; keeping the last winner"
                )
            self.records.append(record)
            self.state.put(key, [n.model_dump() for n in current], asdict(record))
            return current

    async def refine_all(
        self, stage: str, specs: list[LevelSpec], max_rounds: int
    ) -> list[list[TaskProfile]]:
        """Refine independent node sets concurrently (bounded by ``concurrency``)."""
        self.progress.stage(stage, len(specs))

        async def one(spec: LevelSpec) -> list[TaskProfile]:
            nodes = await self.refine(spec, max_rounds)
            self.progress.advance(stage)
            return nodes

        # siblings finish (and are checkpointed) even when one fails; then the first error
        results = await asyncio.gather(*(one(spec) for spec in specs), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    def domain_spec(self, domains: list[TaskProfile], examples: list[str]) -> LevelSpec:
        """Domains: the user's (closed set), the user's plus what covers the examples, or
        the method's seeds plus up to four proposed by the LLM."""
        cap = self.settings.max_domains
        if domains or examples:
            required, closed = tuple(domains), not examples
        else:
            required, closed = (
                tuple(TaskProfile(name=n, definition="", example="") for n in prompts.SEED_DOMAINS),
                False,
            )
            cap = min(cap, len(required) + 4)
        if len(required) > cap:
            raise TaxonomyBuildError(
                f"{len(required)} domains given but max_domains is {self.settings.max_domains}"
            )
        if len({d.name.casefold() for d in required}) < len(required):
            raise TaxonomyBuildError("the same domain name is given twice")
        return LevelSpec(
            level="domain",
            where="",
            cap=cap,
            required=required,
            closed=closed,
            examples=tuple(examples[:MAX_EXAMPLES]),
            rules=prompts.DOMAIN_RULES,
        )

    async def build(self, domains: list[TaskProfile], examples: list[str], name: str) -> Taxonomy:
        """All levels, top-down; each level's node sets are refined concurrently."""
        s = self.settings
        examples = examples[:MAX_EXAMPLES]
        upper, lower = s.max_rounds_upper, s.max_rounds_lower
        (top,) = await self.refine_all("domains", [self.domain_spec(domains, examples)], upper)
        sub_specs = [
            LevelSpec("subcategory", d.name, s.max_subcategories, parents=(d,),
                      examples=tuple(examples), rules=prompts.SUBCATEGORY_RULES)
            for d in top
        ]  # fmt: skip
        subs = await self.refine_all("subcategories", sub_specs, upper)
        pairs = [(d, sub) for d, children in zip(top, subs, strict=True) for sub in children]

        def specs(level: str, cap: int, rules: tuple[str, ...]) -> list[LevelSpec]:
            return [
                LevelSpec(level, f"{d.name}{SEPARATOR}{sub.name}", cap, parents=(d, sub),
                          rules=rules)
                for d, sub in pairs
            ]  # fmt: skip

        levels = await self.refine_all(
            "difficulty levels",
            specs("difficulty level", s.max_difficulties, prompts.DIFFICULTY_RULES),
            lower,
        )
        preferences: list[list[TaskProfile]] = [[] for _ in pairs]
        if s.include_preferences:
            preferences = await self.refine_all(
                "preferences",
                specs("preference", s.max_preferences, prompts.PREFERENCE_RULES),
                lower,
            )
        return _assemble(name, self.endpoint, top, pairs, levels, preferences)


def _assemble(name, endpoint, top, pairs, levels, preferences) -> Taxonomy:
    def node(profile: TaskProfile, children: list[TaxonomyNode]) -> TaxonomyNode:
        return TaxonomyNode(**profile.model_dump(), children=children)

    by_domain: dict[str, list[TaxonomyNode]] = {d.name: [] for d in top}
    for (domain, sub), diffs, prefs in zip(pairs, levels, preferences, strict=True):
        leaves = [node(diff, [node(p, []) for p in prefs]) for diff in diffs]
        by_domain[domain.name].append(node(sub, leaves))
    data = {
        "name": name,
        "description": f"Built by trouter synth taxonomy with generator "
        f"{getattr(endpoint, 'name', endpoint)}.",
        "domains": [node(d, by_domain[d.name]).model_dump(exclude_defaults=True) for d in top],
    }
    try:
        return Taxonomy.from_data(data, source="built taxonomy")
    except ValueError as err:
        raise TaxonomyBuildError(str(err)) from None


def _fingerprint(endpoint: Any, domains, examples, settings: BuildSettings, name: str) -> str:
    knobs = {k: v for k, v in settings.__dict__.items() if k != "concurrency"}
    payload = {
        "generator": [
            getattr(endpoint, "name", str(endpoint)),
            getattr(endpoint, "litellm_model", ""),
        ],
        "domains": [d.model_dump() for d in domains],
        "examples": list(examples),
        "settings": knobs,
        "name": name,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


async def abuild_taxonomy(
    client: Any,
    generator_endpoint: Any,
    *,
    domains: list[str | TaskProfile] | None = None,
    example_queries: list[str] | None = None,
    settings: BuildSettings | None = None,
    name: str = "synthesized",
    meter: CostMeter | None = None,
    progress: Progress | None = None,
    checkpoint: str | Path | None = None,
    records: list[LoopRecord] | None = None,
) -> Taxonomy:
    """Async :func:`build_taxonomy` (for callers already inside an event loop)."""
    settings = settings or BuildSettings()
    profiles = [d if isinstance(d, TaskProfile) else parse_domain_arg(d) for d in domains or []]
    examples = [" ".join(q.split())[:MAX_EXAMPLE_CHARS] for q in example_queries or [] if q.strip()]
    builder = TaxonomyBuilder(
        client,
        generator_endpoint,
        settings,
        meter=meter,
        progress=progress,
        checkpoint=Path(checkpoint) if checkpoint else None,
        fingerprint=_fingerprint(generator_endpoint, profiles, examples, settings, name),
    )
    try:
        return await builder.build(profiles, examples, name)
    finally:
        if records is not None:
            records.extend(builder.records)


def build_taxonomy(
    client: Any,
    generator_endpoint: Any,
    *,
    domains: list[str | TaskProfile] | None = None,
    example_queries: list[str] | None = None,
    max_domains: int = 10,
    max_subcategories: int = 10,
    max_difficulties: int = 5,
    include_preferences: bool = False,
    max_rounds_upper: int = 10,
    max_rounds_lower: int = 5,
    seed: int = 0,
    temperature: float = 0.5,
    concurrency: int = 8,
    name: str = "synthesized",
    meter: CostMeter | None = None,
    progress: Progress | None = None,
    checkpoint: str | Path | None = None,
    records: list[LoopRecord] | None = None,
) -> Taxonomy:
    """Build a validated :class:`Taxonomy` with ``generator_endpoint`` (see module docs).

    ``domains`` are ``"Name: definition"`` strings or profiles; ``example_queries`` are a
    few unlabelled deployment queries the domains must cover. ``checkpoint`` is a JSON file
    holding finished node sets: a rerun with the same inputs resumes from it. ``records``,
    if given, receives one :class:`LoopRecord` per loop run (rounds, calls, choice orders).
    """
    settings = BuildSettings(
        max_domains=max_domains,
        max_subcategories=max_subcategories,
        max_difficulties=max_difficulties,
        include_preferences=include_preferences,
        max_rounds_upper=max_rounds_upper,
        max_rounds_lower=max_rounds_lower,
        seed=seed,
        temperature=temperature,
        concurrency=concurrency,
    )
    return asyncio.run(
        abuild_taxonomy(
            client,
            generator_endpoint,
            domains=domains,
            example_queries=example_queries,
            settings=settings,
            name=name,
            meter=meter,
            progress=progress,
            checkpoint=checkpoint,
            records=records,
        )
    )
