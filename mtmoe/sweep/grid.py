"""The grid of a sweep: its axes (:class:`Grid`), the run configs they give, the parsing of the
comma-separated lists and integer ranges that the command line passes for them, and grid files
(``--grid FILE``): a list of network variants, each crossed with the suites and seeds, for grids
that are not a product of axes (e.g. a reference study's placements and MoE kinds)."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

from mtmoe.errors import MtmoeError
from mtmoe.runner.config import RunConfig, compose
from mtmoe.runner.records import run_name
from mtmoe.tasks.registry import Registry

#: a grid file's variant keys -> the network flags they set (each of them is part of the run name,
#: so different variants never share a run folder)
VARIANT_KEYS = {"placement": "placement", "moe": "moe", "position": "position", "experts": "num_experts",
                "expert_width": "expert_width"}
#: a grid file's variant key for a dense twin: ``{twin_of: {placement: both, moe: softmoe, position: big}}``
#: runs placement none with hidden widths grown to that MoE network's critic parameter count
TWIN_KEY = "twin_of"


def parse_list(text: str | None, flag: str) -> list[str]:
    if text is None:
        return []
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise MtmoeError(f"{flag}: expected a comma-separated list, got {text!r}")
    return items


def parse_ints(text: str | None, flag: str) -> list[int]:
    """'0-4' -> [0..4]; '1,2,4' -> [1, 2, 4]; '0-2,7' -> [0, 1, 2, 7]."""
    out: list[int] = []
    for part in parse_list(text, flag):
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, part)
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise ValueError
                out += list(range(lo_i, hi_i + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise MtmoeError(f"{flag}: {part!r} is not an integer or a range like 0-4") from None
    return list(dict.fromkeys(out))


@dataclass
class Grid:
    """The axes of a sweep. Empty axes take the suite/preset default."""

    suites: list[str]
    seeds: list[int]
    placements: list[str] = field(default_factory=lambda: ["none", "actor", "critic", "both"])
    moes: list[str] = field(default_factory=list)
    positions: list[str] = field(default_factory=list)
    experts: list[int] = field(default_factory=list)
    expert_widths: list[int] = field(default_factory=list)
    algo: str | None = None
    preset: str | None = None
    steps: int | None = None
    budget: str | None = None
    device: str = "auto"
    sets: list[str] = field(default_factory=list)
    variants: list[dict] = field(default_factory=list)  # from a grid file: replaces the placement/MoE axes

    @property
    def size_family(self) -> bool:
        """Several MoE sizes: placement none then gets a width-matched dense twin per size."""
        return len(self.experts) > 1 or len(self.expert_widths) > 1

    def configs(self, registry: Registry) -> list[RunConfig]:
        """One composed RunConfig per distinct run, seed by seed (every suite and variant of the first
        seed, then of the next: a sweep stopped partway leaves each variant with as many seeds as
        the others, or one fewer). Placement none ignores the MoE axes, except in a size family,
        where it runs once per MoE size with hidden widths matched to it (mtmoe.scaling.sizes)."""
        configs = self._variant_configs(registry) if self.variants else self._axes_configs(registry)
        return sorted(configs, key=lambda c: self.seeds.index(c.seed))  # stable: suites, variants kept in order

    def _axes_configs(self, registry: Registry) -> list[RunConfig]:
        out, seen, widths = [], set(), {}
        axes = itertools.product(self.suites, self.placements, self.moes or [None], self.positions or [None],
                                 self.experts or [None], self.expert_widths or [None], self.seeds)
        for suite, placement, moe, position, experts, width, seed in axes:
            dense = placement == "none"
            match = dense and self.size_family
            flags = {"placement": "both" if match else placement, "moe": None if dense and not match else moe,
                     "position": None if dense and not match else position,
                     "num_experts": None if dense and not match else experts,
                     "expert_width": None if dense and not match else width}
            cfg, _ = compose(registry, suite, preset=self.preset, algo=self.algo, steps=self.steps,
                             budget=self.budget, seed=seed, device=self.device, net_flags=flags, sets=self.sets)
            if match:  # the dense twin of this MoE size
                _make_twin(cfg, registry, widths)
            key = (cfg.suite, run_name(cfg))
            if key not in seen:
                seen.add(key)
                out.append(cfg)
        return out


    def _variant_configs(self, registry: Registry) -> list[RunConfig]:
        """Suites × variants × seeds, each variant's keys as network flags (the preset's otherwise);
        a `twin_of` variant: the dense twin of the MoE network it names."""
        out, names, widths = [], {}, {}
        for suite, (i, variant), seed in itertools.product(self.suites, enumerate(self.variants), self.seeds):
            twin = TWIN_KEY in variant
            flags = {VARIANT_KEYS[k]: v for k, v in (variant[TWIN_KEY] if twin else variant).items()}
            cfg, _ = compose(registry, suite, preset=self.preset, algo=self.algo, steps=self.steps,
                             budget=self.budget, seed=seed, device=self.device, net_flags=flags, sets=self.sets)
            if twin:
                _make_twin(cfg, registry, widths)
            key = (cfg.suite, run_name(cfg))
            if key in names:
                raise MtmoeError(f"--grid: variants {names[key] + 1} and {i + 1} give the same run "
                                 f"({key[1]}): make them differ in a key of the run name")
            names[key] = i
            out.append(cfg)
        return out


def load_variants(path: str) -> list[dict]:
    """A grid file's variants: ``variants:`` a list of mappings of VARIANT_KEYS (placement, moe,
    position, experts, expert_width); one clear error for each way the file can be wrong."""
    import yaml

    try:
        data = yaml.safe_load(open(path))
    except OSError as e:
        raise MtmoeError(f"--grid {path}: cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise MtmoeError(f"--grid {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    variants = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(variants, list) or not variants:
        raise MtmoeError(f"--grid {path}: expected a mapping with a non-empty list under 'variants:'")
    for i, v in enumerate(variants, 1):
        if not isinstance(v, dict) or not v:
            raise MtmoeError(f"--grid {path}: variant {i} is not a mapping of {', '.join(VARIANT_KEYS)}")
        _check_variant(path, i, v)
    return variants


def _check_variant(path: str, i: int, v: dict) -> None:
    known = [*VARIANT_KEYS, TWIN_KEY]
    unknown = sorted(set(v) - set(known))
    if unknown:
        raise MtmoeError(f"--grid {path}: variant {i} has unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if TWIN_KEY not in v:
        return
    of = v[TWIN_KEY]
    if len(v) > 1 or not isinstance(of, dict) or not of or set(of) - set(VARIANT_KEYS):
        raise MtmoeError(f"--grid {path}: variant {i}: {TWIN_KEY} stands alone and names an MoE network with "
                         f"{', '.join(VARIANT_KEYS)} (e.g. {{{TWIN_KEY}: {{placement: both, moe: softmoe, "
                         "position: big}})")
    if of.get("placement", "both") == "none":
        raise MtmoeError(f"--grid {path}: variant {i}: {TWIN_KEY} needs an MoE network (placement actor, critic "
                         "or both), not none")


def _make_twin(cfg: RunConfig, registry: Registry, widths: dict) -> None:
    """Turn a composed MoE run config into its width-matched dense twin (widths cached per suite
    and MoE network in ``widths``)."""
    from mtmoe.scaling.sizes import size_tag

    tag = size_tag(cfg.net)
    if (cfg.suite, tag) not in widths:
        widths[(cfg.suite, tag)] = _matched_hidden(cfg, registry)
    cfg.net = dataclasses.replace(cfg.net, placement="none", hidden=widths[(cfg.suite, tag)])
    cfg.dense_match = tag


def _matched_hidden(cfg: RunConfig, registry: Registry) -> tuple[int, ...]:
    from mtmoe.scaling.sizes import matched_hidden
    from mtmoe.tasks import make_mixture

    env = make_mixture(cfg.suite, registry, num_envs=len(registry.suite(cfg.suite).tasks), steps=cfg.steps)
    try:
        return matched_hidden(cfg.net, cfg.algo, env.single_observation_space, env.single_action_space)
    finally:
        env.close()
