"""Breakout, Freeway and Asterix as tensor games against minatar 1.0.15 itself.

Replays: minatar's Env and the tensor game get the same actions and uniforms (minatar_replay.py),
and reward, terminal, observation, difficulty and the whole state must agree after every step,
through many episodes, with uniforms that now and then sit on rounding boundaries. Scripted
policies reach the rare states (Breakout's brick refill, Freeway's time limit, Asterix's full
ramp). Statistics: mean random-policy returns against minatar's own RandomState.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minatar_replay import (MinatarSpec, SideBySide, Uniforms, minatar_returns, random_policy, tensor_returns,
                            welch_z)
from mtmoe.tasks.tensor_minatar.asterix import Asterix
from mtmoe.tasks.tensor_minatar.breakout import Breakout
from mtmoe.tasks.tensor_minatar.freeway import Freeway
from mtmoe.tasks.tensor_minatar.game import GAMES

torch.set_num_threads(1)

# ---------------------------------------------------------------- per-game replay specs

BREAKOUT = MinatarSpec("breakout", {}, {"breakout.py:reset": ["ball_start"]}, lambda env: dict(
    ball_x=env.ball_x, ball_y=env.ball_y, ball_dir=env.ball_dir, last_x=env.last_x, last_y=env.last_y,
    pos=env.pos, brick_map=env.brick_map.astype(bool), strike=env.strike, terminal=env.terminal))

_CAR_SITES = {"freeway.py:119": [f"speed{i}" for i in range(8)], "freeway.py:120": [f"dir{i}" for i in range(8)]}
FREEWAY = MinatarSpec("freeway", _CAR_SITES, _CAR_SITES, lambda env: dict(
    pos=env.pos, move_timer=env.move_timer, terminate_timer=env.terminate_timer, terminal=env.terminal,
    car_x=[c[0] for c in env.cars], car_timer=[c[2] for c in env.cars], car_speed=[c[3] for c in env.cars]))
FREEWAY_DIR0 = 8  # u column of car 0's direction: 0.5 there gives speed 0, on which minatar's state() raises


def _read_asterix(env) -> dict:
    slots = [e if e is not None else [0, 0, False, False] for e in env.entities]
    return dict(player_x=env.player_x, player_y=env.player_y, entity_x=[e[0] for e in slots],
                entity_alive=[e is not None for e in env.entities], entity_lr=[e[2] for e in slots],
                entity_gold=[e[3] for e in slots], spawn_speed=env.spawn_speed, spawn_timer=env.spawn_timer,
                move_speed=env.move_speed, move_timer=env.move_timer, ramp_timer=env.ramp_timer,
                ramp_index=env.ramp_index, terminal=env.terminal)


ASTERIX = MinatarSpec("asterix", {"asterix.py:109": ["lr"], "asterix.py:110": ["gold"], "asterix.py:115": ["slot"]},
                      {}, _read_asterix)

# ---------------------------------------------------------------- scripted policies


def breakout_tracker(seed: int, explore: float = 0.02):
    """Keep the paddle under the ball (its next column, or its current one: angled or straight
    bounces, switching every 37 steps), with a few random moves."""
    gen = torch.Generator().manual_seed(seed)

    def policy(t, game, u):
        c = game._const
        next_x = (game.ball_x + c.dx[game.ball_dir]).clamp(0, 9)
        straight = (t // 37 + torch.arange(game.num_envs)) % 2 == 1
        target = torch.where(straight, game.ball_x, next_x)
        action = torch.where(target < game.pos, 1, torch.where(target > game.pos, 3, 0))
        wild = torch.rand(game.num_envs, generator=gen) < explore
        return torch.where(wild, torch.tensor([0, 1, 3])[torch.randint(3, (game.num_envs,), generator=gen)], action)

    return policy


def freeway_climber(seed: int):
    """Half the envs press 'u' 90% of the time (many crossings, car redraws), half act uniformly."""
    gen = torch.Generator().manual_seed(seed)

    def policy(t, game, u):
        n = game.num_envs
        uniform = torch.tensor([0, 2, 4])[torch.randint(3, (n,), generator=gen)]
        climb = torch.where(torch.rand(n, generator=gen) < 0.9, 2, uniform)
        return torch.where(torch.arange(n) % 2 == 0, climb, uniform)

    return policy


def asterix_survivor(seed: int):
    """Two-step lookahead on a copy of the game (25 action pairs, this step's uniforms for both):
    avoid being caught, take gold, else move at random among the safe actions."""
    gen = torch.Generator().manual_seed(seed)

    def policy(t, game, u):
        n, pairs = game.num_envs, 25
        sim = Asterix(n * pairs, ramping=game.ramping)
        sim.load_state_dict({k: v.repeat_interleave(pairs, 0) for k, v in game.state_dict().items()})
        first, second = torch.arange(pairs).div(5, rounding_mode="floor"), torch.arange(pairs) % 5
        u_sim = u.repeat_interleave(pairs, 0)
        r1, end1 = sim.step(first.repeat(n), u_sim)
        r2, end2 = sim.step(second.repeat(n), u_sim)
        score = (r1 + r2 - 10 * end1.float() - 5 * end2.float()).view(n, 5, 5).amax(2)
        score = score + 0.1 * torch.rand(n, 5, generator=gen)
        return score.argmax(1)  # minimal actions n, l, u, r, d are full-set indices 0..4

    return policy


# ---------------------------------------------------------------- replays


def test_registered():
    assert {"breakout", "freeway", "asterix"} <= set(GAMES)
    assert Breakout.minimal_actions == "nlr" and Freeway.minimal_actions == "nud" and Asterix.minimal_actions == "nlurd"


def test_breakout_random_replay():
    stats = SideBySide(BREAKOUT, Breakout, 64).run(1500, random_policy("nlr", 1), Uniforms(0, edge_prob=0.1))
    assert len(stats.episode_returns) > 5000


def test_breakout_tracker_clears_bricks():
    stats = SideBySide(BREAKOUT, Breakout, 32).run(2000, breakout_tracker(2), Uniforms(1))
    assert max(stats.episode_returns) > 30, "no episode cleared all 30 bricks (the refill went untested)"
    assert len(stats.episode_returns) > 32


def test_freeway_replay_to_time_limit():
    no_car0_speed_zero = dict(exclude_reset=(FREEWAY_DIR0,), exclude_step=(FREEWAY_DIR0,))
    stats = SideBySide(FREEWAY, Freeway, 32).run(2600, freeway_climber(3), Uniforms(2, edge_prob=0.02),
                                                 **no_car0_speed_zero)
    assert len(stats.episode_lengths) >= 32 and set(stats.episode_lengths) == {2501}
    assert sum(stats.episode_returns) >= 300  # many crossings, so many car redraws


def test_freeway_speed_zero_quirk():
    """A direction draw of exactly 0.5 makes a car of speed 0 (moving left every step, trail in
    the previous car's channel); the tensor game keeps minatar's behaviour."""
    base = Uniforms(4)

    def uniforms(n, k, exclude=()):
        u = base(n, k)
        u[::2, FREEWAY_DIR0 + 3] = 0.5  # car 3 of every other env
        u[::4, FREEWAY_DIR0 + 4] = 0.5  # and car 4 next to it
        return u

    side = SideBySide(FREEWAY, Freeway, 16)
    side.run(300, freeway_climber(5), uniforms)
    assert bool((side.game.car_speed[::2, 3] == 0).all())


@pytest.mark.parametrize("ramping", [True, False])
def test_asterix_random_replay(ramping):
    stats = SideBySide(ASTERIX, Asterix, 64, ramping=ramping).run(1000, random_policy("nlurd", 6), Uniforms(7, 0.1))
    assert len(stats.episode_returns) > 500
    assert (stats.max_difficulty > 0) == ramping


def test_asterix_survivor_reaches_full_ramp():
    side = SideBySide(ASTERIX, Asterix, 16)
    stats = side.run(1300, asterix_survivor(8), Uniforms(9, 0.05))
    assert stats.max_difficulty == 9, "no env reached the end of the ramp (spawn and move interval 1)"


@pytest.mark.parametrize("spec,cls,actions", [(BREAKOUT, Breakout, "nlr"), (FREEWAY, Freeway, "nud"),
                                              (ASTERIX, Asterix, "nlurd")])
def test_terminal_env_stays_terminal(spec, cls, actions):
    """Without resets a finished env returns reward 0, terminal True and keeps its state."""
    steps = 2600 if cls is Freeway else 300
    n = 4 if cls is Freeway else 16
    side = SideBySide(spec, cls, n, autoreset=False)
    stats = side.run(steps, random_policy(actions, 10), Uniforms(11), exclude_reset=(), exclude_step=())
    assert len(stats.episode_returns) == n


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize("cls,ramping,minatar_episodes,episodes_per_env", [
    (Breakout, True, 4000, 16), (Asterix, True, 3000, 12), (Asterix, False, 3000, 12), (Freeway, True, 48, 1)])
def test_random_policy_mean_return(cls, ramping, minatar_episodes, episodes_per_env):
    """Mean return of the uniform policy over the minimal actions: tensor game on torch.rand
    uniforms vs minatar on its RandomState; |z| < 4 (two-sided p ~ 6e-5)."""
    actions = cls.minimal_actions
    ours = tensor_returns(cls, 256, episodes_per_env, random_policy(actions, 12), seed=13, ramping=ramping)
    theirs = minatar_returns(cls.name, minatar_episodes, actions, seed=14, ramping=ramping)
    z = welch_z(ours, theirs)
    assert abs(z) < 4, (f"{cls.name}: tensor mean {ours.mean():.3f} (n {len(ours)}) "
                        f"vs minatar {theirs.mean():.3f} (n {len(theirs)}), z {z:.2f}")


# ---------------------------------------------------------------- devices


@pytest.mark.parametrize("cls", [Breakout, Freeway, Asterix])
def test_runs_on_meta_device(cls):
    """Pure tensor code: reset, step and observe on the 'meta' device (no data, so no host sync)."""
    n = 8
    game = cls(n, "meta")
    game.reset(torch.ones(n, dtype=torch.bool, device="meta"), torch.rand(n, len(cls.reset_draws), device="meta"))
    action = torch.zeros(n, dtype=torch.long, device="meta")
    reward, terminal = game.step(action, torch.rand(n, len(cls.draws), device="meta"))
    obs = game.observe()
    assert obs.shape == (n, len(cls.channels), 10, 10) and obs.dtype == torch.bool and obs.device.type == "meta"
    assert reward.shape == (n,) and reward.dtype == torch.float32 and terminal.dtype == torch.bool
    assert game.difficulty().shape == (n,)


def test_randint_mirror_agrees_at_edges():
    """The harness's numpy randint and game.randint agree on every edge uniform."""
    from minatar_replay import EDGE_UNIFORMS, randint_from_uniform
    from mtmoe.tasks.tensor_minatar.game import randint

    u = torch.from_numpy(EDGE_UNIFORMS)
    for low, high in [(0, 2), (1, 6), (0, 1), (0, 3), (0, 7), (1, 9), (0, 8)]:
        np.testing.assert_array_equal(randint(u, low, high).numpy(), randint_from_uniform(EDGE_UNIFORMS, low, high))
