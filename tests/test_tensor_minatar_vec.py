"""TensorMinAtarVec: minatar.Environment's sticky actions, time limit, autoreset, spec, state."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from minatar import Environment

from minatar_replay import UniformRandom, resolve_sites
from mtmoe.tasks.backends.minatar import GAMES, MinAtarOptions, MinAtarVecEnv
from mtmoe.tasks.tensor_minatar.vec import TensorMinAtarVec, game_class
from test_tensor_minatar_si_seaquest import SEAQUEST, SPACE_INVADERS

torch.set_num_threads(1)


def _available() -> list[str]:
    """minatar module names of the tensor games present in this checkout."""
    out = []
    for module in GAMES.values():
        try:
            game_class(module)
        except ModuleNotFoundError:
            continue
        out.append(module)
    return out


AVAILABLE = _available()
SPECS = {"space_invaders": SPACE_INVADERS, "seaquest": SEAQUEST}
try:  # the other games' replay specs, where their tests are present
    from test_tensor_minatar_games import ASTERIX, BREAKOUT
    SPECS.update(breakout=BREAKOUT, asterix=ASTERIX)
except ImportError:
    pass


@pytest.mark.parametrize("minimal", [True, False])
@pytest.mark.parametrize("game", AVAILABLE)
def test_spec_equals_minatar_backend(game, minimal):
    name = next(k for k, v in GAMES.items() if v == game)
    ref = MinAtarVecEnv(name, 1, MinAtarOptions(minimal_action_set=minimal), None).spec
    for alias in (name, f"MinAtar/{name}-v1", game):
        assert TensorMinAtarVec(alias, 2, minimal_action_set=minimal).spec == ref


def _uniforms(vec: TensorMinAtarVec, gen: torch.Generator):
    k, kr = vec.n_step_draws, vec.n_reset_draws
    return torch.rand(vec.num_envs, 1 + k, generator=gen), torch.rand(vec.num_envs, kr, generator=gen)


@pytest.mark.parametrize("game", [g for g in AVAILABLE if g in SPECS])
def test_sticky_actions_match_minatar_environment(game):
    """Side by side with minatar.Environment (sticky prob. 0.5) on the same uniforms: the sticky
    draw comes first, the repeat is in the full action set, and last_action survives an episode's
    end (minatar's reset leaves it)."""
    n, steps, spec = 16, 400, SPECS[game]
    vec = TensorMinAtarVec(game, n, sticky_action_prob=0.5, seed=0)
    cls = game_class(game)
    envs = []
    for _ in range(n):
        env = Environment(game, sticky_action_prob=0.5)
        env.random = env.env.random = UniformRandom()
        envs.append(env)
    step_sites = {"environment.py:act": [0], **{site: [1 + c for c in cols] for site, cols in
                                                resolve_sites(spec.step_sites, cls.draws).items()}}
    reset_sites = resolve_sites(spec.reset_sites, cls.reset_draws)
    gen = torch.Generator().manual_seed(1)
    u, u_reset = _uniforms(vec, gen)
    vec.game.reset(torch.ones(n, dtype=torch.bool), u_reset)
    for i, env in enumerate(envs):
        env.random.load(u_reset[i].numpy(), reset_sites)
        env.reset()
    minimal = torch.tensor(envs[0].minimal_action_set())
    repeats = ends = 0
    for t in range(steps):
        u, u_reset = _uniforms(vec, gen)
        actions = torch.randint(len(minimal), (n,), generator=gen)
        out = vec.step_with_uniforms(actions, u[:, 0], u[:, 1:], u_reset)
        for i, env in enumerate(envs):
            env.random.load(u[i].numpy(), step_sites)
            reward, terminal = env.act(int(minimal[actions[i]]))
            repeats += env.last_action != int(minimal[actions[i]])
            assert env.last_action == int(vec.last_action[i]), (t, i)
            assert (reward, terminal) == (float(out.reward[i]), bool(out.terminated[i])), (t, i)
            assert np.array_equal(env.state().transpose(2, 0, 1), out.final_obs[i].numpy()), (t, i)
            if terminal:
                ends += 1
                env.random.load(u_reset[i].numpy(), reset_sites)
                env.reset()
            assert np.array_equal(env.state().transpose(2, 0, 1), out.obs[i].numpy()), (t, i)
    assert repeats > steps and ends >= 8


@pytest.mark.parametrize("game", AVAILABLE)
def test_time_limit_autoreset_final_obs(game):
    """Episodes cut at 7 steps (truncated unless terminated), counted per env; ended envs restart
    in the same step; final_obs holds the last observation of the ended episode."""
    n, limit = 32, 7
    cut = TensorMinAtarVec(game, n, max_episode_steps=limit, seed=3)
    free = TensorMinAtarVec(game, n, seed=3)  # the same uniforms, no limit: the reference until a cut
    gen = torch.Generator().manual_seed(4)
    fresh = TensorMinAtarVec(game, 1).reset()[0]
    since_end = torch.zeros(n, dtype=torch.long)
    diverged = torch.zeros(n, dtype=torch.bool)
    for t in range(60):
        actions = torch.randint(cut.spec.n_actions, (n,), generator=gen)
        a, b = cut.step(actions), free.step(actions)
        since_end += 1
        assert torch.equal(a.truncated, (since_end == limit) & ~a.terminated)
        assert torch.equal(a.episode_end, a.terminated | a.truncated)
        same = ~diverged
        assert torch.equal(a.final_obs[same], b.final_obs[same]) and torch.equal(a.reward[same], b.reward[same])
        assert torch.equal(a.obs[~a.episode_end], a.final_obs[~a.episode_end])
        assert a.obs.dtype == torch.uint8 and a.final_obs.shape == a.obs.shape == (n, *cut.spec.obs_shape)
        if not game_class(game).reset_draws:  # every episode starts alike
            assert bool((a.obs[a.episode_end] == fresh).all())
        assert torch.equal(cut.steps, torch.where(a.episode_end, 0, since_end))
        diverged |= a.truncated
        since_end[a.episode_end] = 0
    assert int(diverged.sum()) >= n // 2


def _run(vec: TensorMinAtarVec, steps: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        r = vec.step(torch.randint(vec.spec.n_actions, (vec.num_envs,), generator=gen))
        out += [r.obs, r.reward, r.terminated, r.truncated, r.final_obs]
    return out


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("game", AVAILABLE)
def test_state_dict_round_trip_continues_exactly(game):
    vec = TensorMinAtarVec(game, 32, max_episode_steps=50, seed=5)
    _run(vec, 120, seed=6)
    saved = vec.state_dict()
    expected = _run(vec, 150, seed=7)
    other = TensorMinAtarVec(game, 32, max_episode_steps=50, seed=99)
    _run(other, 10, seed=8)
    other.load_state_dict(saved)
    assert _same(_run(other, 150, seed=7), expected)


@pytest.mark.parametrize("game", AVAILABLE)
def test_seed_determinism(game):
    a, b = TensorMinAtarVec(game, 16, seed=11), TensorMinAtarVec(game, 16, seed=11)
    first = _run(a, 100, seed=1)
    assert _same(_run(b, 100, seed=1), first)
    assert not _same(_run(TensorMinAtarVec(game, 16, seed=12), 100, seed=1), first)
    a.reset(seed=11)  # reseeds and clears sticky actions: the same trajectory again
    assert _same(_run(a, 100, seed=1), first)


def test_full_action_set_maps_to_itself():
    vec = TensorMinAtarVec("Seaquest", 6, minimal_action_set=False, sticky_action_prob=0.0, seed=0)
    vec.step(torch.arange(6))
    assert torch.equal(vec.last_action, torch.arange(6))
    vec = TensorMinAtarVec("SpaceInvaders", 4, sticky_action_prob=0.0, seed=0)
    vec.step(torch.arange(4))
    assert vec.last_action.tolist() == [0, 1, 3, 5]  # minatar's minimal set n, l, r, f


@pytest.mark.parametrize("game", ["asterix", "freeway"])  # the two it speeds up on a CPU (~6 s to compile each)
def test_compiled_step_equals_eager(game):
    eager = TensorMinAtarVec(game, 64, max_episode_steps=40, seed=3)
    compiled = TensorMinAtarVec(game, 64, max_episode_steps=40, seed=3, compile=True)
    # the compiled graph runs, not the eager method (bound methods compare equal, not identical)
    assert eager._step == eager._tensor_step and compiled._step != compiled._tensor_step
    assert _same(_run(compiled, 200, seed=4), _run(eager, 200, seed=4))
    state, expected = compiled.state_dict(), eager.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected if k != "generator")
