"""MinAtar Seaquest as batched tensor code (minatar 1.0.15 ``environments/seaquest.py``).

Rules, in the order of minatar's ``act``:

- spawns: when its timer is 0 an enemy (a sub with prob. 1/3, else a fish) appears at the left
  edge heading right (prob. 1/2) or at the right edge heading left, in a row 1..8, unless an
  enemy in that row heads the other way (the three draws are made anyway); the timer restarts at
  the spawn speed (20, ramping down to 1). Every 30 steps a diver appears likewise (no row rule);
- the player: fire (shot timer 0, then 5) adds a bullet at the sub heading its way, else
  left / right / up / down move the sub (x in 0..9, y in 0..8; left / right also turn it);
- friendly bullets (newest first) move; one leaving the screen vanishes, one on an enemy removes
  the oldest fish there, else the oldest sub there, and itself: +1;
- divers (newest first): one on the sub is rescued if fewer than 6 are aboard, else it moves when
  its timer (5) is 0 and may be rescued where it lands;
- enemy subs (newest first), then enemy bullets, then fish (newest first): an enemy on the sub
  ends the game; one whose move timer is 0 (it restarts at the move speed, 5 ramping down to 2)
  moves, leaves, lands on the sub (game over) or lands on a friendly bullet (the oldest there;
  both removed, +1). A sub whose shot timer (10) is 0 fires a bullet where it now is, *even if it
  was just removed*. Enemy bullets end the game on the sub's cell before and after they move;
- oxygen (200) drops by 1 per step below the surface; the game ends when it is <= 0 (checked
  before the drop). Reaching the surface from below with no diver ends the game; with 6 divers
  the reward is oxygen * 10 // 200 and the count becomes 0; then in every case oxygen is
  refilled, the count drops by one (so a 6-diver surfacing leaves -1, and later surfacings
  cannot end the game until a diver is picked up) and, with ramping, the game speeds up.

Layout: entities live in slot pools, (N, fields, slots) int16 tensors holding minatar's lists in
list order with the free slots (all zero) at the end; a step appends at the first free slot,
frees slots and compacts at its end. Fish and subs share one pool in spawn order (minatar keeps
two lists; how they interleave never matters); ``state_dict`` gives minatar's two lists.
"""

from __future__ import annotations

import torch

from mtmoe.tasks.tensor_minatar.game import TensorGame, randint, register_game

MAX_OXYGEN = 200
INIT_SPAWN_SPEED = 20
DIVER_SPAWN_SPEED = 30
INIT_MOVE_INTERVAL = 5
SHOT_COOL_DOWN = 5
ENEMY_SHOT_INTERVAL = 10
DIVER_MOVE_INTERVAL = 5
NOOP, LEFT, UP, RIGHT, DOWN, FIRE = range(6)

INT = torch.int16
ENEMY_SLOTS = 32  # at most 30 at once (a spawn every step, 30 steps to cross at move speed 2)
DIVER_SLOTS = 2  # one per 30 steps, each gone within 59
BULLET_SLOTS = 2  # one per 5 steps, each gone within 9
X, Y, DX = 0, 1, 2  # DX: +1 heading right, -1 heading left
E_MOVE, E_SHOT, E_IS_SUB, E_ALIVE = 3, 4, 5, 6
D_MOVE, D_ALIVE = 3, 4
B_ALIVE = 3

COUNTERS = ("oxygen", "diver_count", "sub_x", "sub_y", "e_spawn_speed", "e_spawn_timer", "d_spawn_timer",
            "move_speed", "ramp_index", "shot_timer")
FLAGS = ("sub_or", "surface", "terminal")
START = {"oxygen": MAX_OXYGEN, "diver_count": 0, "sub_x": 5, "sub_y": 0, "e_spawn_speed": INIT_SPAWN_SPEED,
         "e_spawn_timer": INIT_SPAWN_SPEED, "d_spawn_timer": DIVER_SPAWN_SPEED, "move_speed": INIT_MOVE_INTERVAL,
         "ramp_index": 0, "shot_timer": 0, "sub_or": False, "surface": True, "terminal": False}


def compact(pool: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(N, F, K) pool with the ``keep`` slots moved to the front in their order, the rest zeroed."""
    order = torch.argsort(keep.logical_not().to(torch.int8), dim=1, stable=True)
    slots = torch.arange(pool.shape[2], device=pool.device)
    kept = slots < keep.sum(1, keepdim=True)
    return (pool.gather(2, order[:, None].expand_as(pool)) * kept[:, None]).to(pool.dtype)


def pick(mask: torch.Tensor, key: torch.Tensor, largest: bool) -> torch.Tensor:
    """(N, K) one-hot of the masked slot with the largest (or smallest) distinct ``key``."""
    if largest:
        best = torch.where(mask, key, -1).argmax(1, keepdim=True)
    else:
        best = torch.where(mask, key, 1 << 14).argmin(1, keepdim=True)
    return mask & (torch.arange(mask.shape[1], device=mask.device) == best)


@register_game
class Seaquest(TensorGame):
    name = "seaquest"
    channels = ("sub_front", "sub_back", "friendly_bullet", "trail", "enemy_bullet", "enemy_fish",
                "enemy_sub", "oxygen_guage", "diver_guage", "diver")
    minimal_actions = "nlurdf"
    draws = ("enemy_right", "enemy_is_sub", "enemy_row", "diver_right", "diver_row")

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", ramping: bool = True):
        super().__init__(num_envs, device, ramping)
        n, dev = num_envs, self.device
        # Scalars as views of two tensors, so that a reset is one masked copy each.
        self._counters = torch.zeros(n, len(COUNTERS), dtype=INT, device=dev)
        self._flags = torch.zeros(n, len(FLAGS), dtype=torch.bool, device=dev)
        for i, name in enumerate(COUNTERS):
            setattr(self, name, self._counters[:, i])
        for i, name in enumerate(FLAGS):
            setattr(self, name, self._flags[:, i])
        self._start_counters = torch.tensor([START[k] for k in COUNTERS], dtype=INT, device=dev)
        self._start_flags = torch.tensor([START[k] for k in FLAGS], device=dev)
        self.enemies = torch.zeros(n, 7, ENEMY_SLOTS, dtype=INT, device=dev)
        self.divers = torch.zeros(n, 5, DIVER_SLOTS, dtype=INT, device=dev)
        self.f_bullets = torch.zeros(n, 4, BULLET_SLOTS, dtype=INT, device=dev)
        self.e_bullets = torch.zeros(n, 2, 10, 10, dtype=torch.uint8, device=dev)  # counts [heads left/right, y, x]
        self._cols = torch.arange(10, device=dev)
        self._rank = torch.arange(ENEMY_SLOTS, dtype=INT, device=dev)
        self.reset(torch.ones(n, dtype=torch.bool, device=dev), torch.zeros(n, 0, device=dev))

    # ------------------------------------------------------------------ state

    def reset(self, mask: torch.Tensor, u: torch.Tensor) -> None:
        self._counters.copy_(torch.where(mask[:, None], self._start_counters, self._counters))
        self._flags.copy_(torch.where(mask[:, None], self._start_flags, self._flags))
        for pool in (self.enemies, self.divers, self.f_bullets, self.e_bullets):
            pool.masked_fill_(mask.view(-1, *[1] * (pool.dim() - 1)), 0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """minatar's attributes (its lists as (N, slots, fields) pools in list order, an alive flag
        last: ``fish`` x, y, heads right, move timer; ``subs`` the same and the shot timer;
        ``divers`` as fish; ``f_bullets`` x, y, heads right), ``e_bullets`` as counts per
        [heads right, y, x]."""
        state = {name: getattr(self, name).clone() for name in COUNTERS + FLAGS}
        e = self.enemies
        alive, is_sub = e[:, E_ALIVE].bool(), e[:, E_IS_SUB].bool()

        def rows(pool, fields):  # DX -> heads right, fields last
            pool = pool.clone()
            pool[:, DX] = pool[:, DX] > 0
            return pool[:, fields].transpose(1, 2).contiguous()

        state["fish"] = rows(compact(e, alive & ~is_sub), [X, Y, DX, E_MOVE, E_ALIVE])
        state["subs"] = rows(compact(e, alive & is_sub), [X, Y, DX, E_MOVE, E_SHOT, E_ALIVE])
        state["divers"] = rows(self.divers, [X, Y, DX, D_MOVE, D_ALIVE])
        state["f_bullets"] = rows(self.f_bullets, [X, Y, DX, B_ALIVE])
        state["e_bullets"] = self.e_bullets.clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in COUNTERS + FLAGS + ("e_bullets",):
            getattr(self, name).copy_(state[name])

        def pool(rows, fields, width):  # the inverse of state_dict's rows()
            out = torch.zeros(self.num_envs, width, rows.shape[1], dtype=INT, device=self.device)
            out[:, fields] = rows.transpose(1, 2).to(device=self.device, dtype=INT)
            out[:, DX] = torch.where(out[:, DX] > 0, 1, torch.where(out[:, -1] > 0, -1, 0))
            return out

        fish = pool(state["fish"], [X, Y, DX, E_MOVE, E_ALIVE], 7)
        subs = pool(state["subs"], [X, Y, DX, E_MOVE, E_SHOT, E_ALIVE], 7)
        subs[:, E_IS_SUB] = subs[:, E_ALIVE]
        both = torch.cat([fish, subs], 2)
        self.enemies.copy_(compact(both, both[:, E_ALIVE].bool())[..., :ENEMY_SLOTS])
        self.divers.copy_(pool(state["divers"], [X, Y, DX, D_MOVE, D_ALIVE], 5))
        self.f_bullets.copy_(pool(state["f_bullets"], [X, Y, DX, B_ALIVE], 4))

    def difficulty(self) -> torch.Tensor:
        return self.ramp_index.long()

    # ------------------------------------------------------------------ step

    def step(self, action: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        live = ~self.terminal
        self._spawn(live, u)
        self._move_player(torch.where(live, action, NOOP))
        reward = self._friendly_bullets(live)
        self._divers(live)
        reward += self._enemies(live)
        reward += self._timers_and_surface(live)
        self.enemies = compact(self.enemies, self.enemies[:, E_ALIVE].bool())
        self.divers = compact(self.divers, self.divers[:, D_ALIVE].bool())
        self.f_bullets = compact(self.f_bullets, self.f_bullets[:, B_ALIVE].bool())
        return reward.float(), self.terminal.clone()

    def _on_sub(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x == self.sub_x[:, None]) & (y == self.sub_y[:, None])

    @staticmethod
    def _append(pool: torch.Tensor, alive: torch.Tensor, add: torch.Tensor, *fields) -> torch.Tensor:
        """``pool`` with ``fields`` (each (N,) or a number) written at the first free slot where ``add``."""
        slots = torch.arange(pool.shape[2], device=pool.device)
        at = (slots == alive.sum(1, keepdim=True)) & add[:, None]
        new = torch.stack([torch.as_tensor(f, device=pool.device).to(INT).expand(pool.shape[0]) for f in fields], 1)
        return torch.where(at[:, None], new[..., None], pool)

    def _spawn(self, live: torch.Tensor, u: torch.Tensor) -> None:
        e = self.enemies
        spawn = live & (self.e_spawn_timer == 0)
        heads_right, is_sub, row = u[:, 0] < 1 / 2, u[:, 1] < 1 / 3, randint(u[:, 2], 1, 9).to(INT)
        dx = torch.where(heads_right, 1, -1).to(INT)
        alive = e[:, E_ALIVE].bool()
        blocked = (alive & (e[:, Y] == row[:, None]) & (e[:, DX] != dx[:, None])).any(1)
        self.enemies = self._append(e, alive, spawn & ~blocked, torch.where(heads_right, 0, 9), row, dx,
                                    self.move_speed, ENEMY_SHOT_INTERVAL, is_sub, 1)
        self.e_spawn_timer.copy_(torch.where(spawn, self.e_spawn_speed, self.e_spawn_timer))

        spawn = live & (self.d_spawn_timer == 0)
        heads_right, row = u[:, 3] < 1 / 2, randint(u[:, 4], 1, 9)
        self.divers = self._append(self.divers, self.divers[:, D_ALIVE].bool(), spawn, torch.where(heads_right, 0, 9),
                                   row, torch.where(heads_right, 1, -1), DIVER_MOVE_INTERVAL, 1)
        self.d_spawn_timer.masked_fill_(spawn, DIVER_SPAWN_SPEED)

    def _move_player(self, action: torch.Tensor) -> None:
        fire = (action == FIRE) & (self.shot_timer == 0)
        b = self.f_bullets
        self.f_bullets = self._append(b, b[:, B_ALIVE].bool(), fire, self.sub_x, self.sub_y,
                                      torch.where(self.sub_or, 1, -1), 1)
        self.shot_timer.masked_fill_(fire, SHOT_COOL_DOWN)
        left, right = action == LEFT, action == RIGHT
        self.sub_x.add_(right.to(INT) - left.to(INT)).clamp_(0, 9)
        self.sub_or.copy_(~left & (self.sub_or | right))
        self.sub_y.add_((action == DOWN).to(INT) - (action == UP).to(INT)).clamp_(0, 8)

    def _friendly_bullets(self, live: torch.Tensor) -> torch.Tensor:
        """Bullets move; newest first, each hits the oldest fish, else the oldest sub, on its cell."""
        b, e = self.f_bullets, self.enemies
        flying = b[:, B_ALIVE].bool() & live[:, None]
        b[:, X] += b[:, DX] * flying
        flying &= (b[:, X] >= 0) & (b[:, X] <= 9)
        e_alive = e[:, E_ALIVE].bool()
        fish_first = e[:, E_IS_SUB] * ENEMY_SLOTS + self._rank  # the smallest is hit
        reward = torch.zeros(self.num_envs, dtype=INT, device=self.device)
        for j in reversed(range(BULLET_SLOTS)):
            on_cell = e_alive & (e[:, X] == b[:, X, j, None]) & (e[:, Y] == b[:, Y, j, None]) & flying[:, j, None]
            hit = pick(on_cell, fish_first, largest=False)
            e_alive &= ~hit
            struck = hit.any(1)
            flying[:, j] &= ~struck
            reward += struck
        b[:, B_ALIVE] = b[:, B_ALIVE] * (flying | ~live[:, None])
        e[:, E_ALIVE] = e_alive
        return reward

    def _divers(self, live: torch.Tensor) -> None:
        """Divers on the sub are rescued (newest first, while fewer than 6 aboard); others move."""
        d = self.divers
        alive = d[:, D_ALIVE].bool() & live[:, None]
        before = alive & self._on_sub(d[:, X], d[:, Y])
        moving = alive & (d[:, D_MOVE] == 0)
        d[:, D_MOVE] = torch.where(moving, DIVER_MOVE_INTERVAL, d[:, D_MOVE] - alive.to(INT))
        d[:, X] += d[:, DX] * moving
        gone = moving & ((d[:, X] < 0) | (d[:, X] > 9))
        wants = before | (moving & ~gone & self._on_sub(d[:, X], d[:, Y]))
        count = self.diver_count.clone()
        rescued = torch.zeros_like(alive)
        for j in reversed(range(DIVER_SLOTS)):  # the cap of 6 takes divers one at a time
            rescued[:, j] = wants[:, j] & (count < 6)
            count += rescued[:, j]
        self.diver_count.copy_(count)
        d[:, D_ALIVE] = d[:, D_ALIVE] * ~(rescued | gone)

    def _enemies(self, live: torch.Tensor) -> torch.Tensor:
        """minatar's sub loop, enemy bullet loop and fish loop (they meet only through bullets)."""
        e = self.enemies
        alive = e[:, E_ALIVE].bool() & live[:, None]
        touch = alive & self._on_sub(e[:, X], e[:, Y])
        moving = alive & (e[:, E_MOVE] == 0)
        e[:, E_MOVE] = torch.where(moving, self.move_speed[:, None], e[:, E_MOVE] - alive.to(INT))
        e[:, X] += e[:, DX] * moving
        gone = moving & ((e[:, X] < 0) | (e[:, X] > 9))
        lands = moving & ~gone & self._on_sub(e[:, X], e[:, Y])
        self.terminal |= (touch | lands).any(1)
        # Movers onto friendly bullets: each bullet, oldest first, takes the newest sub, else the
        # newest fish there (= minatar's subs-then-fish loops, newest first, each the oldest bullet).
        meets = moving & ~gone & ~lands
        b = self.f_bullets
        subs_first = e[:, E_IS_SUB] * ENEMY_SLOTS + self._rank  # the largest is hit
        reward = torch.zeros(self.num_envs, dtype=INT, device=self.device)
        for j in range(BULLET_SLOTS):
            on_cell = meets & (e[:, X] == b[:, X, j, None]) & (e[:, Y] == b[:, Y, j, None]) & b[:, B_ALIVE, j, None].bool()
            hit = pick(on_cell, subs_first, largest=True)
            meets &= ~hit
            struck = hit.any(1)
            b[:, B_ALIVE, j] *= ~struck
            reward += struck
        # Every sub in the list at its turn fires on time, even one that just left or was shot.
        in_list = alive & e[:, E_IS_SUB].bool()
        fire = in_list & (e[:, E_SHOT] == 0)
        e[:, E_SHOT] = torch.where(fire, ENEMY_SHOT_INTERVAL, e[:, E_SHOT] - in_list.to(INT))
        self._enemy_bullets(live, fire)
        shot = moving & ~gone & ~lands & ~meets
        e[:, E_ALIVE] = e[:, E_ALIVE] * ~(gone | shot)
        return reward

    def _enemy_bullets(self, live: torch.Tensor, fire: torch.Tensor) -> None:
        """Bullets of firing subs join; all move a cell, ending the game on the sub's cell before or after."""
        e, n = self.enemies, self.num_envs
        on_screen = fire & (e[:, X] >= 0) & (e[:, X] <= 9)  # the others would vanish this step
        cell = (e[:, DX] > 0) * 100 + e[:, Y] * 10 + e[:, X]
        self.e_bullets.view(n, 200).scatter_add_(1, (cell * on_screen).long(), on_screen.to(torch.uint8))
        here = (self.sub_y * 10 + self.sub_x).long()[:, None, None].expand(n, 2, 1)
        on_sub = lambda: (self.e_bullets.view(n, 2, 100).gather(2, here) > 0).flatten(1).any(1)
        self.terminal |= live & on_sub()
        moved = torch.zeros_like(self.e_bullets)
        moved[:, 0, :, :9] = self.e_bullets[:, 0, :, 1:]
        moved[:, 1, :, 1:] = self.e_bullets[:, 1, :, :9]
        self.e_bullets = torch.where(live[:, None, None, None], moved, self.e_bullets)
        self.terminal |= live & on_sub()

    def _timers_and_surface(self, live: torch.Tensor) -> torch.Tensor:
        """Timers tick; oxygen runs out below the surface; arriving at the surface rescues (or ends)."""
        for timer in (self.e_spawn_timer, self.d_spawn_timer, self.shot_timer):
            timer -= ((timer > 0) & live).to(INT)
        self.terminal |= live & (self.oxygen <= 0)
        below = live & (self.sub_y > 0)
        self.oxygen -= below.to(INT)
        self.surface &= ~below
        arrive = live & ~below & ~self.surface
        self.terminal |= arrive & (self.diver_count == 0)
        surfacing = arrive & (self.diver_count != 0)
        full = surfacing & (self.diver_count == 6)
        reward = torch.where(full, self.oxygen * 10 // MAX_OXYGEN, 0)
        self.diver_count.masked_fill_(full, 0)
        self.diver_count -= surfacing.to(INT)
        self.oxygen.masked_fill_(surfacing, MAX_OXYGEN)
        self.surface |= surfacing
        if self.ramping:
            ramp = surfacing & ((self.e_spawn_speed > 1) | (self.move_speed > 2))
            self.move_speed -= (ramp & (self.move_speed > 2) & (self.ramp_index % 2 == 1)).to(INT)
            self.e_spawn_speed -= (ramp & (self.e_spawn_speed > 1)).to(INT)
            self.ramp_index += ramp
        return reward

    # ------------------------------------------------------------------ observation

    def observe(self) -> torch.Tensor:
        """Entities scattered into a flat (N, 10 * 100 + 1) buffer whose last cell takes the
        absent ones; enemy bullets and the two gauges are written as planes."""
        n, e, d, b = self.num_envs, self.enemies, self.divers, self.f_bullets
        absent = 1000

        def cells(channel, x, y, valid):
            return torch.where(valid, channel * 100 + y * 10 + x, absent)

        def trail(pool, alive):  # the cell it came from
            x = pool[:, X] - pool[:, DX]
            return cells(3, x, pool[:, Y], alive & (x >= 0) & (x <= 9))

        sub_cell = self.sub_y * 10 + self.sub_x
        e_alive, d_alive = e[:, E_ALIVE].bool(), d[:, D_ALIVE].bool()
        index = torch.cat([torch.stack([sub_cell, sub_cell + torch.where(self.sub_or, 99, 101)], 1),
                           cells(2, b[:, X], b[:, Y], b[:, B_ALIVE].bool()),
                           cells(5 + e[:, E_IS_SUB], e[:, X], e[:, Y], e_alive), trail(e, e_alive),
                           cells(9, d[:, X], d[:, Y], d_alive), trail(d, d_alive)], 1)
        flat = torch.zeros(n, absent + 1, dtype=torch.bool, device=self.device)
        flat.scatter_(1, index.long(), True)
        obs = flat[:, :absent].view(n, 10, 10, 10)
        obs[:, 4] = (self.e_bullets[:, 0] | self.e_bullets[:, 1]) > 0
        obs[:, 7, 9] = self._cols < (self.oxygen.clamp(min=0) * 10 // MAX_OXYGEN)[:, None]
        obs[:, 8, 9] = (self._cols >= 9 - self.diver_count[:, None]) & (self._cols < 9)
        return obs
