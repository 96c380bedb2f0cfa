"""Tensor SpaceInvaders and Seaquest replay minatar 1.0.15 exactly (tests/minatar_replay.py).

Every replay compares reward, terminal, observation, difficulty and the full state (minatar's
attributes and lists) after every step and reset, ramping on and off where it matters:

- SpaceInvaders: random play; a predicting shooter that clears wave after wave (the ramp runs
  to its end);
- Seaquest: random play on uniforms often at rounding edges; a diver-chasing player that
  surfaces with 1, 2, 3 or 6 divers, ignores its oxygen (some run out), ramps far; the
  negative diver count after a 6-diver surfacing, used to ramp to the end and meet the largest
  crowds (29 enemies); a state_dict round trip;
- both: terminal envs stay put; the mean return of random play matches minatar's own (z-test).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minatar_replay import (MinatarSpec, SideBySide, Uniforms, minatar_returns, random_policy, tensor_returns,
                            welch_z)
from mtmoe.tasks.tensor_minatar.seaquest import (BULLET_SLOTS, COUNTERS, D_ALIVE, DIVER_SLOTS, E_ALIVE, ENEMY_SLOTS,
                                                 FLAGS, X, Y, Seaquest)
from mtmoe.tasks.tensor_minatar.space_invaders import SpaceInvaders

torch.set_num_threads(1)

SI_KEYS = ("pos", "f_bullet_map", "e_bullet_map", "alien_map", "alien_dir", "enemy_move_interval",
           "alien_move_timer", "alien_shot_timer", "ramp_index", "shot_timer", "terminal")


def read_space_invaders(env) -> dict:
    return {k: getattr(env, k) for k in SI_KEYS}


def _slots(rows: list, slots: int, width: int) -> np.ndarray:
    """minatar's list of [fields...] as a slot pool: rows in order, an alive flag last, zeros after."""
    pool = np.zeros((slots, width + 1), np.int64)
    for i, row in enumerate(rows):
        pool[i, :width], pool[i, width] = row, 1  # IndexError: more than the pool holds
    return pool


def read_seaquest(env) -> dict:
    state = {k: getattr(env, k) for k in COUNTERS + FLAGS}
    state["fish"] = _slots(env.e_fish, ENEMY_SLOTS, 4)
    state["subs"] = _slots(env.e_subs, ENEMY_SLOTS, 5)
    state["divers"] = _slots(env.divers, DIVER_SLOTS, 4)
    state["f_bullets"] = _slots(env.f_bullets, BULLET_SLOTS, 3)
    counts = np.zeros((2, 10, 10), np.int64)
    for x, y, heads_right in env.e_bullets:
        counts[int(heads_right), y, x] += 1
    state["e_bullets"] = counts
    return state


SPACE_INVADERS = MinatarSpec("space_invaders", {}, {}, read_space_invaders)
SEAQUEST = MinatarSpec("seaquest", {"seaquest.py:230": ["enemy_right"], "seaquest.py:231": ["enemy_is_sub"],
                                    "seaquest.py:233": ["enemy_row"], "seaquest.py:245": ["diver_right"],
                                    "seaquest.py:247": ["diver_row"]}, {}, read_seaquest)

NOOP, LEFT, UP, RIGHT, DOWN, FIRE = range(6)


# ---------------------------------------------------------------- scripted players


def _future_aliens(game: SpaceInvaders, steps: int) -> torch.Tensor:
    """(N, steps, 10, 10): the alien map after the move of each of the next steps (kills ignored)."""
    aliens, direction, timer = game.alien_map.clone(), game.alien_dir.clone(), game.alien_move_timer.clone()
    count = aliens.flatten(1).sum(1)
    out = []
    for _ in range(steps):
        move = timer == 0
        timer = torch.where(move, torch.minimum(count, game.enemy_move_interval), timer) - 1
        left = direction < 0
        wall = torch.where(left, aliens[:, :, 0].any(1), aliens[:, :, 9].any(1))
        side = torch.where(left[:, None, None], torch.roll(aliens, -1, 2), torch.roll(aliens, 1, 2))
        moved = torch.where((move & wall)[:, None, None], torch.roll(aliens, 1, 1), side)
        aliens = torch.where(move[:, None, None], moved, aliens)
        direction = torch.where(move & wall, -direction, direction)
        out.append(aliens)
    return torch.stack(out, 1)


def space_invaders_hunter(seed: int, eps: float, horizon: int = 24):
    """Go to the column from which the earliest possible shot meets an alien (by predicting the
    wave's moves), fire, step aside from a bullet or alien about to land; random with prob. eps."""
    gen = torch.Generator().manual_seed(seed)
    cols, fire_at = torch.arange(10), torch.arange(horizon)[None, :, None]

    def policy(t, game, u):
        n, pos = game.num_envs, game.pos
        future = _future_aliens(game, horizon + 9)
        meets = torch.zeros(n, horizon, 10, dtype=torch.bool)  # [env, fire time, column]
        for j in range(9):  # a bullet fired at f is in row 8 - j after step f + j
            meets |= future[:, j:j + horizon, 8 - j, :]
        ready = torch.maximum((cols - pos[:, None]).abs(), game.shot_timer[:, None])[:, None, :]
        first = torch.where(meets & (fire_at >= ready), fire_at, 99).amin(1)
        target = first.argmin(1)
        move = torch.sign(target - pos)
        fire = (target == pos) & (first.gather(1, target[:, None])[:, 0] == 0)
        danger = game.e_bullet_map[:, 8] | future[:, 0, 9]
        unsafe = lambda m: danger.gather(1, (pos + m).clamp(0, 9)[:, None])[:, 0]
        for alt in (0, 1, -1):
            alt_move = torch.full_like(pos, alt)
            move = torch.where(unsafe(move) & ~unsafe(alt_move), alt_move, move)
        act = torch.where(move < 0, LEFT, torch.where(move > 0, RIGHT, torch.where(fire, FIRE, NOOP)))
        random = torch.tensor([NOOP, LEFT, RIGHT, FIRE])[torch.randint(4, (n,), generator=gen)]
        return torch.where(torch.rand(n, generator=gen) < eps, random, act)

    return policy


def seaquest_diver(seed: int, carry: torch.Tensor, careful: torch.Tensor, eps: float):
    """Chase the nearest diver, shoot enemies ahead in the row, dodge adjacent ones, and surface
    with ``carry`` divers aboard (or, where ``careful``, when oxygen runs low); random with prob. eps."""
    gen = torch.Generator().manual_seed(seed)

    def policy(t, game, u):
        n, x, y, count = game.num_envs, game.sub_x, game.sub_y, game.diver_count
        d, e = game.divers, game.enemies  # (N, fields, slots)
        alive = d[:, D_ALIVE].bool()
        dist = torch.where(alive, (d[:, X] - x[:, None]).abs() + (d[:, Y] - y[:, None]).abs(), 99)
        j = dist.argmin(1, keepdim=True)
        tx = torch.where(alive.any(1), d[:, X].gather(1, j)[:, 0], 5)
        ty = torch.where(alive.any(1), d[:, Y].gather(1, j)[:, 0], 4)
        act = torch.where(ty > y, DOWN, torch.where(ty < y, UP, torch.where(tx > x, RIGHT,
                                                                           torch.where(tx < x, LEFT, NOOP))))
        go_up = (count != 0) & ((count >= carry) | (careful & (game.oxygen < 25 + 2 * y)))
        act = torch.where(go_up, UP, act)
        e_alive, in_row = e[:, E_ALIVE].bool(), e[:, Y] == y[:, None]
        ahead = torch.where(game.sub_or[:, None], e[:, X] > x[:, None], e[:, X] < x[:, None])
        aim = e_alive & in_row & ahead & ((e[:, X] - x[:, None]).abs() <= 4)
        act = torch.where(aim.any(1) & (game.shot_timer == 0) & (y > 0), FIRE, act)
        near = e_alive & in_row & ((e[:, X] - x[:, None]).abs() <= 1)
        act = torch.where(near.any(1) & (act != FIRE), torch.where(y >= 8, UP, DOWN), act)
        return torch.where(torch.rand(n, generator=gen) < eps, torch.randint(6, (n,), generator=gen), act)

    return policy


# ---------------------------------------------------------------- event counting


class Events:
    """Counts, on the minatar side, the states a test means to reach."""

    def __init__(self, sbs: SideBySide):
        self.waves_cleared = self.surfacings = self.six_divers = self.oxygen_out = self.max_enemies = 0
        for env in sbs.envs:
            self._watch_space_invaders(env) if sbs.spec.game == "space_invaders" else self._watch_seaquest(env)

    def _watch_space_invaders(self, env) -> None:
        act = env.act

        def counted_act(a):
            live, aliens = not env.terminal, np.count_nonzero(env.alien_map)
            reward, terminal = act(a)
            self.waves_cleared += live and reward == aliens  # the last aliens shot: a new wave
            return reward, terminal

        env.act = counted_act

    def _watch_seaquest(self, env) -> None:
        act, surface = env.act, env._surface

        def counted_act(a):
            live = not env.terminal
            reward, terminal = act(a)
            self.oxygen_out += live and terminal and env.oxygen <= 0
            self.max_enemies = max(self.max_enemies, len(env.e_fish) + len(env.e_subs))
            return reward, terminal

        def counted_surface():
            self.surfacings += 1
            self.six_divers += env.diver_count == 6
            return surface()

        env.act, env._surface = counted_act, counted_surface


def run_side_by_side(sbs: SideBySide, steps: int, policy, uniforms: Uniforms, before_step=None):
    """SideBySide.run with a hook that may change both sides' state alike before a step."""
    k, kr = len(sbs.game.draws), len(sbs.game.reset_draws)
    sbs.reset(uniforms(sbs.n, kr))
    for t in range(steps):
        if before_step is not None:
            before_step(t, sbs)
        u, u_reset = uniforms(sbs.n, k), uniforms(sbs.n, kr)
        sbs.step(policy(t, sbs.game, u), u, u_reset, t)
    return sbs.stats


def set_both(sbs: SideBySide, envs, **values) -> None:
    """Give envs ``envs`` the same scalar state on both sides (states minatar can reach)."""
    for i in envs:
        for name, value in values.items():
            setattr(sbs.envs[i], name, value)
            getattr(sbs.game, name)[i] = value


# ---------------------------------------------------------------- SpaceInvaders


@pytest.mark.parametrize("ramping", [True, False])
def test_space_invaders_random_play(ramping):
    sbs = SideBySide(SPACE_INVADERS, SpaceInvaders, 32, ramping=ramping)
    stats = sbs.run(500, random_policy("nlrf", 1), Uniforms(0))
    assert len(stats.episode_returns) > 150


@pytest.mark.parametrize("ramping,steps", [(True, 1000), (False, 500)])
def test_space_invaders_clears_waves(ramping, steps):
    """A predicting shooter clears wave after wave: the ramp runs to its end (move interval 6)."""
    sbs = SideBySide(SPACE_INVADERS, SpaceInvaders, 16, ramping=ramping)
    events = Events(sbs)
    stats = sbs.run(steps, space_invaders_hunter(0, eps=0.03), Uniforms(0))
    assert events.waves_cleared >= steps // 40 and len(stats.episode_returns) >= 3
    assert stats.max_difficulty == (6 if ramping else 0)


# ---------------------------------------------------------------- Seaquest


@pytest.mark.parametrize("ramping", [True, False])
def test_seaquest_random_play(ramping):
    """Random actions, uniforms often on the rounding edges of the draws."""
    sbs = SideBySide(SEAQUEST, Seaquest, 32, ramping=ramping)
    stats = sbs.run(600, random_policy("nlurdf", 2), Uniforms(1, edge_prob=0.1))
    assert len(stats.episode_returns) > 300


@pytest.mark.parametrize("ramping,n,steps", [(True, 24, 1200), (False, 16, 800)])
def test_seaquest_divers_surfacing_oxygen(ramping, n, steps):
    """Divers rescued and brought up by 1, 2, 3 or 6; every eighth player ignores its oxygen, and
    now and then finds its tank nearly empty (a state any dive reaches) and runs out."""
    sbs = SideBySide(SEAQUEST, Seaquest, n, ramping=ramping)
    events = Events(sbs)
    carry, careful = torch.tensor([1, 2, 3, 6] * (n // 4)), torch.arange(n) % 8 != 7

    def before_step(t, sbs):
        if t % 100 == 50:
            low = ~careful & (sbs.game.sub_y > 0) & (sbs.game.oxygen > 3)
            set_both(sbs, np.flatnonzero(low.numpy()), oxygen=3)
    stats = run_side_by_side(sbs, steps, seaquest_diver(0, carry, careful, eps=0.05), Uniforms(3, edge_prob=0.02),
                             before_step)
    assert events.surfacings > n * steps // 200 and events.six_divers >= 2 and events.oxygen_out >= 2
    assert stats.max_difficulty >= (10 if ramping else 0)
    assert max(stats.episode_returns) >= 10


class SameHeading(Uniforms):
    """Uniforms whose enemy-heading column always says "right": no spawn is ever blocked."""

    def __call__(self, n, k, exclude=()):
        u = super().__call__(n, k, exclude)
        if k == len(Seaquest.draws):
            u[:, Seaquest.draws.index("enemy_right")] = 0.25
        return u


@pytest.mark.parametrize("uniforms,steps", [(Uniforms(4), 200), (SameHeading(5), 300)], ids=["random", "same_heading"])
def test_seaquest_full_ramp_crowd(uniforms, steps):
    """After a 6-diver surfacing the count is negative and surfacing cannot end the game:
    bobbing up and down ramps the game to its end (a spawn every step, a move every 3 steps),
    the sub waits at the surface (nothing reaches row 0) while the crowd builds up, then dives
    in. With every enemy heading the same way no spawn is blocked: 29 enemies at once (30
    within a step), the most the 32-slot pool must hold."""
    n = 16
    sbs = SideBySide(SEAQUEST, Seaquest, n)
    events = Events(sbs)
    diver = seaquest_diver(1, torch.full((n,), 6), torch.ones(n, dtype=torch.bool), eps=0.1)

    def policy(t, game, u):
        ramping = game.ramp_index < 19
        bob = torch.where(game.sub_y > 0, UP, DOWN)
        return torch.where(ramping, bob, torch.where(torch.tensor(t < 100), NOOP, diver(t, game, u)))

    def before_step(t, sbs):
        fresh = np.flatnonzero((sbs.game.diver_count == 0).numpy() & (sbs.game.ramp_index == 0).numpy())
        set_both(sbs, fresh, diver_count=-1)  # as after a 6-diver surfacing
    stats = run_side_by_side(sbs, steps, policy, uniforms, before_step)
    assert stats.max_difficulty == 19
    assert events.max_enemies >= (29 if isinstance(uniforms, SameHeading) else 18)


def test_seaquest_state_dict_round_trip():
    """A Seaquest restored from its state_dict (minatar's lists; fish and subs merged back into
    one pool) continues exactly like the original."""
    n = 16
    sbs = SideBySide(SEAQUEST, Seaquest, n)
    set_both(sbs, range(n), diver_count=-1, e_spawn_speed=1, move_speed=2, ramp_index=19)
    run_side_by_side(sbs, 60, lambda t, g, u: torch.full((n,), NOOP), SameHeading(6))
    original = sbs.game
    copy = Seaquest(n)
    copy.load_state_dict(original.state_dict())
    gen = torch.Generator().manual_seed(0)
    for t in range(300):
        u, action = torch.rand(n, len(Seaquest.draws), generator=gen), torch.randint(6, (n,), generator=gen)
        (r1, t1), (r2, t2) = original.step(action, u), copy.step(action, u)
        assert torch.equal(r1, r2) and torch.equal(t1, t2) and torch.equal(original.observe(), copy.observe()), t
        original.reset(t1, u[:, :0])
        copy.reset(t2, u[:, :0])
    mine, theirs = original.state_dict(), copy.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


# ---------------------------------------------------------------- both games


@pytest.mark.parametrize("spec,cls,actions", [(SPACE_INVADERS, SpaceInvaders, "nlrf"), (SEAQUEST, Seaquest, "nlurdf")],
                         ids=["space_invaders", "seaquest"])
def test_terminal_envs_stay_put(spec, cls, actions):
    """Without resets every env ends and then stays as it is (reward 0, terminal), as minatar does."""
    sbs = SideBySide(spec, cls, 16, autoreset=False)
    sbs.run(400, random_policy(actions, 3), Uniforms(7))
    assert bool(sbs.game.terminal.all())


@pytest.mark.parametrize("game,cls,actions,n,per_env", [("space_invaders", SpaceInvaders, "nlrf", 128, 2),
                                                        ("seaquest", Seaquest, "nlurdf", 512, 8),
                                                        ("seaquest", Seaquest, "nlrdf", 256, 4)])
def test_random_policy_returns_match_minatar(game, cls, actions, n, per_env):
    """Mean return of a uniform random policy (for Seaquest also one that never goes up): tensor
    game on torch.rand uniforms vs minatar on its own RandomState, two-sided z-test at p = 1e-4."""
    episodes = n * per_env
    ours = tensor_returns(cls, n, per_env, random_policy(actions, 11), seed=12)
    theirs = minatar_returns(game, episodes, actions, seed=13)
    assert len(ours) == episodes and abs(welch_z(ours, theirs)) < 3.9, (ours.mean(), theirs.mean())
