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

Layout: entities live in slot pools, (N, fields, slots) int8 tensors. Fish and subs share one
pool (minatar keeps two lists; how they interleave never matters) whose list order is given by
each enemy's age in steps (one spawn per step at most: ages differ); free slots may sit anywhere.
Divers and friendly bullets (2 slots each) are kept compacted in list order. ``state_dict``
gives minatar's lists. The step avoids CPU-slow forms (see batch_ops): ``torch.where``,
comparisons with numbers and broadcasting on the (N, 32) enemy slots.
"""

from __future__ import annotations

import torch

from mtmoe.tasks.tensor_minatar.batch_ops import (any_rows, blend, compact_pair, in_order, select_rows, spread,
                                                  winner)
from mtmoe.tasks.tensor_minatar.game import TensorGame, randint, register_game

MAX_OXYGEN = 200
INIT_SPAWN_SPEED = 20
DIVER_SPAWN_SPEED = 30
INIT_MOVE_INTERVAL = 5
SHOT_COOL_DOWN = 5
ENEMY_SHOT_INTERVAL = 10
DIVER_MOVE_INTERVAL = 5
NOOP, LEFT, UP, RIGHT, DOWN, FIRE = range(6)

INT = torch.int16  # per-env counters (oxygen reaches 200)
SLOT = torch.int8  # entity fields, all within -1..127
# Pool sizes: minatar's lists never grow longer (so a spawn always finds a free slot).
ENEMY_SLOTS = 32  # at most 30 at once (a spawn every step, 30 steps to cross at move speed 2)
DIVER_SLOTS = 2  # one per 30 steps, each gone within 59
BULLET_SLOTS = 2  # one per 5 steps, each gone within 9
X, Y, DX = 0, 1, 2  # DX: +1 heading right, -1 heading left
E_MOVE, E_SHOT, E_IS_SUB, E_ALIVE, E_AGE = 3, 4, 5, 6, 7  # an enemy leaves within 60 steps: ages < 64
D_MOVE, D_ALIVE = 3, 4
B_ALIVE = 3

COUNTERS = ("e_spawn_timer", "d_spawn_timer", "shot_timer", "oxygen", "diver_count", "sub_x", "sub_y",
            "e_spawn_speed", "move_speed", "ramp_index")  # the three timers first: they tick together
FLAGS = ("sub_or", "surface", "terminal")
START = {"oxygen": MAX_OXYGEN, "diver_count": 0, "sub_x": 5, "sub_y": 0, "e_spawn_speed": INIT_SPAWN_SPEED,
         "e_spawn_timer": INIT_SPAWN_SPEED, "d_spawn_timer": DIVER_SPAWN_SPEED, "move_speed": INIT_MOVE_INTERVAL,
         "ramp_index": 0, "shot_timer": 0, "sub_or": False, "surface": True, "terminal": False}
FISH_FIELDS, SUB_FIELDS = [X, Y, DX, E_MOVE, E_ALIVE], [X, Y, DX, E_MOVE, E_SHOT, E_ALIVE]
DIVER_FIELDS, BULLET_FIELDS = [X, Y, DX, D_MOVE, D_ALIVE], [X, Y, DX, B_ALIVE]


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
        self.enemies = torch.zeros(n, 8, ENEMY_SLOTS, dtype=SLOT, device=dev)
        self.divers = torch.zeros(n, 5, DIVER_SLOTS, dtype=SLOT, device=dev)
        self.f_bullets = torch.zeros(n, 4, BULLET_SLOTS, dtype=SLOT, device=dev)
        self.e_bullets = torch.zeros(n, 2, 10, 10, dtype=torch.uint8, device=dev)  # counts [heads left/right, y, x]
        self._cols = torch.arange(10, device=dev)
        self._nines = torch.full((n, ENEMY_SLOTS), 9, dtype=torch.uint8, device=dev)
        # New entities by heading (enemies: heads right * 2 + is sub): the fields that do not vary.
        self._new_enemy = torch.zeros(4, 8, dtype=SLOT, device=dev)
        for code in range(4):
            right, sub = divmod(code, 2)
            self._new_enemy[code, [X, DX, E_SHOT, E_IS_SUB, E_ALIVE]] = torch.tensor(
                [9 - 9 * right, 2 * right - 1, ENEMY_SHOT_INTERVAL, sub, 1], dtype=SLOT, device=dev)
        self._new_diver = torch.tensor([[9, 0, -1, DIVER_MOVE_INTERVAL, 1], [0, 0, 1, DIVER_MOVE_INTERVAL, 1]],
                                       dtype=SLOT, device=dev)
        self._new_bullet = torch.tensor([[0, 0, -1, 1], [0, 0, 1, 1]], dtype=SLOT, device=dev)
        self.reset(torch.ones(n, dtype=torch.bool, device=dev), torch.zeros(n, 0, device=dev))

    # ------------------------------------------------------------------ state

    def reset(self, mask: torch.Tensor, u: torch.Tensor) -> None:
        self._counters.copy_(torch.where(mask[:, None], self._start_counters, self._counters))
        self._flags.copy_(torch.where(mask[:, None], self._start_flags, self._flags))
        for pool in (self.enemies, self.divers, self.f_bullets, self.e_bullets):
            pool *= ~mask.view(-1, *[1] * (pool.dim() - 1))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """minatar's attributes; its lists as (N, slots, fields) pools in list order with an alive
        flag last (``fish``: x, y, heads right, move timer; ``subs``: the same and the shot timer;
        ``divers``: as fish; ``f_bullets``: x, y, heads right) and ``e_bullets`` as counts per
        [heads right, y, x]."""
        state = {name: getattr(self, name).clone() for name in COUNTERS + FLAGS}
        e = self.enemies
        alive, is_sub = e[:, E_ALIVE] > 0, e[:, E_IS_SUB] > 0

        def rows(pool, fields):  # heads right instead of DX, fields last
            pool = pool.clone()
            pool[:, DX] = pool[:, DX] > 0
            return pool[:, fields].transpose(1, 2).contiguous()

        state["fish"] = rows(in_order(e, alive & ~is_sub, e[:, E_AGE]), FISH_FIELDS)
        state["subs"] = rows(in_order(e, alive & is_sub, e[:, E_AGE]), SUB_FIELDS)
        state["divers"] = rows(self.divers, DIVER_FIELDS)
        state["f_bullets"] = rows(self.f_bullets, BULLET_FIELDS)
        state["e_bullets"] = self.e_bullets.clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in COUNTERS + FLAGS + ("e_bullets",):
            getattr(self, name).copy_(state[name])

        def pool(rows, fields, width):  # the inverse of state_dict's rows()
            out = torch.zeros(self.num_envs, width, rows.shape[1], dtype=SLOT, device=self.device)
            out[:, fields] = rows.transpose(1, 2).to(device=self.device, dtype=SLOT)
            out[:, DX] = torch.where(out[:, DX] > 0, 1, -out[:, fields[-1]])
            return out

        fish, subs = pool(state["fish"], FISH_FIELDS, 8), pool(state["subs"], SUB_FIELDS, 8)
        subs[:, E_IS_SUB] = subs[:, E_ALIVE]
        for kind in (fish, subs):  # ages that keep each list's order
            kind[:, E_AGE] = (kind[:, E_ALIVE].sum(1, keepdim=True) - 1 - torch.arange(ENEMY_SLOTS, device=self.device))
            kind[:, E_AGE] *= kind[:, E_ALIVE]
        both = torch.cat([fish, subs], 2)
        alive = both[:, E_ALIVE] > 0
        self.enemies.copy_(in_order(both, alive, alive.to(SLOT))[..., :ENEMY_SLOTS])
        self.divers.copy_(pool(state["divers"], DIVER_FIELDS, 5))
        self.f_bullets.copy_(pool(state["f_bullets"], BULLET_FIELDS, 4))

    def difficulty(self) -> torch.Tensor:
        return self.ramp_index.long()

    # ------------------------------------------------------------------ step

    def step(self, action: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        live = ~self.terminal
        self._spawn(live, u)
        self._move_player(torch.where(live, action, NOOP))
        sub_cell = (self.sub_y * 10 + self.sub_x).to(SLOT)
        reward = self._friendly_bullets(live)
        self._divers(live, sub_cell[:, None])
        reward += self._enemies(live, spread(live, ENEMY_SLOTS), spread(sub_cell, ENEMY_SLOTS))
        reward += self._timers_and_surface(live)
        self.divers = compact_pair(self.divers, D_ALIVE)
        self.f_bullets = compact_pair(self.f_bullets, B_ALIVE)
        return reward.float(), self.terminal.clone()

    @staticmethod
    def _append(pool: torch.Tensor, slot: torch.Tensor, add: torch.Tensor, new: torch.Tensor) -> None:
        """Write ``new`` (N, fields) into ``pool`` at slot ``slot`` (N,) where ``add``."""
        index = slot[:, None, None].expand(-1, pool.shape[1], 1)
        pool.scatter_(2, index, torch.where(add[:, None, None], new[..., None], pool.gather(2, index)))

    def _spawn(self, live: torch.Tensor, u: torch.Tensor) -> None:
        """An enemy into the first free slot, unless its row holds one heading the other way; a diver
        after the divers."""
        ex, ey, edx, _, _, _, e_alive, _ = self.enemies.unbind(1)
        spawn = live & (self.e_spawn_timer == 0)
        heads_right, is_sub, row = u[:, 0] < 1 / 2, u[:, 1] < 1 / 3, randint(u[:, 2], 1, 9)
        new = self._new_enemy[heads_right.long() * 2 + is_sub]
        new[:, Y], new[:, E_MOVE] = row, self.move_speed
        # rows signed by heading: one heading the other way in this row has -row * dx
        blocked = any_rows((ey * edx == -(new[:, Y] * new[:, DX])[:, None]) & (e_alive > 0))
        self._append(self.enemies, e_alive.argmin(1), spawn & ~blocked, new)  # the first free slot
        self.e_spawn_timer.copy_(torch.where(spawn, self.e_spawn_speed, self.e_spawn_timer))

        spawn = live & (self.d_spawn_timer == 0)
        new = self._new_diver[(u[:, 3] < 1 / 2).long()]
        new[:, Y] = randint(u[:, 4], 1, 9)
        self._append(self.divers, self.divers[:, D_ALIVE].sum(1).clamp(max=DIVER_SLOTS - 1), spawn, new)
        self.d_spawn_timer.masked_fill_(spawn, DIVER_SPAWN_SPEED)

    def _move_player(self, action: torch.Tensor) -> None:
        fire = (action == FIRE) & (self.shot_timer == 0)
        new = self._new_bullet[self.sub_or.long()]
        new[:, X], new[:, Y] = self.sub_x, self.sub_y
        self._append(self.f_bullets, self.f_bullets[:, B_ALIVE].sum(1).clamp(max=BULLET_SLOTS - 1), fire, new)
        self.shot_timer.masked_fill_(fire, SHOT_COOL_DOWN)
        left, right = action == LEFT, action == RIGHT
        self.sub_x.add_(right.to(INT) - left.to(INT)).clamp_(0, 9)
        self.sub_or.copy_(~left & (self.sub_or | right))
        self.sub_y.add_((action == DOWN).to(INT) - (action == UP).to(INT)).clamp_(0, 8)

    def _friendly_bullets(self, live: torch.Tensor) -> torch.Tensor:
        """Bullets move; newest first, each hits the oldest fish, else the oldest sub, on its cell."""
        bx, by, bdx, b_alive = self.f_bullets.unbind(1)
        ex, ey, _, _, _, is_sub, e_alive, age = self.enemies.unbind(1)
        flying = (b_alive > 0) & live[:, None]
        bx += bdx * flying
        flying &= (bx >= 0) & (bx <= 9)
        bullet_cell = torch.where(flying, by * 10 + bx, -100)  # -100: no cell
        enemy_cell, alive = ey * 10 + ex, e_alive.bool()
        fish_first = age + 65 - is_sub * 64
        reward = torch.zeros(self.num_envs, dtype=INT, device=self.device)
        for j in reversed(range(BULLET_SLOTS)):
            on_cell = alive & (enemy_cell == spread(bullet_cell[:, j], ENEMY_SLOTS))
            alive &= ~winner(on_cell, fish_first)
            struck = any_rows(on_cell)
            flying[:, j] &= ~struck
            reward += struck
        b_alive *= flying | ~live[:, None]
        e_alive.copy_(alive)
        return reward

    def _divers(self, live: torch.Tensor, sub_cell: torch.Tensor) -> None:
        """Divers on the sub are rescued (newest first, while fewer than 6 aboard); others move."""
        dx, dy, ddx, timer, d_alive = self.divers.unbind(1)
        alive = (d_alive > 0) & live[:, None]
        before = alive & (dy * 10 + dx == sub_cell)
        moving = alive & (timer == 0)
        timer -= alive.to(SLOT)
        timer += (DIVER_MOVE_INTERVAL - timer) * moving
        dx += ddx * moving
        gone = moving & ((dx < 0) | (dx > 9))
        wants = before | (moving & ~gone & (dy * 10 + dx == sub_cell))
        count = self.diver_count  # counts up in place
        rescued = []
        for j in reversed(range(DIVER_SLOTS)):  # the cap of 6 takes divers one at a time
            rescued.append(wants[:, j] & (count < 6))
            count += rescued[-1]
        d_alive *= ~(torch.stack(rescued[::-1], 1) | gone)

    def _enemies(self, live: torch.Tensor, live_slots: torch.Tensor, sub_cell: torch.Tensor) -> torch.Tensor:
        """minatar's sub loop, enemy bullet loop and fish loop (they meet only through bullets)."""
        ex, ey, edx, timer, shot_timer, is_sub, e_alive, age = self.enemies.unbind(1)
        alive = e_alive.bool() & live_slots
        touch = alive & (ey * 10 + ex == sub_cell)
        moving = alive & ~timer.bool()  # timer 0
        timer -= alive.to(SLOT)
        timer += (spread(self.move_speed.to(SLOT), ENEMY_SLOTS) - timer) * moving
        ex += edx * moving
        gone = moving & (ex.view(torch.uint8) > self._nines)  # x -1 reads 255
        cell = ey * 10 + ex
        lands = moving & ~gone & (cell == sub_cell)
        self.terminal |= any_rows(touch | lands)
        # Movers onto friendly bullets: each bullet, oldest first, takes the newest sub, else the
        # newest fish there (= minatar's subs-then-fish loops, newest first, each the oldest bullet).
        meets = moving & ~gone & ~lands
        free = meets.clone()
        bx, by, _, b_alive = self.f_bullets.unbind(1)
        bullet_cell = torch.where(b_alive > 0, by * 10 + bx, -100)  # -100: no cell
        subs_first = is_sub * 64 + 63 - age
        reward = torch.zeros(self.num_envs, dtype=INT, device=self.device)
        for j in range(BULLET_SLOTS):
            on_cell = free & (cell == spread(bullet_cell[:, j], ENEMY_SLOTS))
            free &= ~winner(on_cell, subs_first)
            struck = any_rows(on_cell)
            b_alive[:, j] *= ~struck
            reward += struck
        # Every sub in the list at its turn fires on time, even one that just left or was shot.
        in_list = alive & is_sub.bool()
        fire = in_list & ~shot_timer.bool()  # shot timer 0
        shot_timer -= in_list.to(SLOT)
        shot_timer += (ENEMY_SHOT_INTERVAL - shot_timer) * fire
        self._enemy_bullets(live, fire & ~gone, cell.to(INT) + 50 * (edx + 1).to(INT))
        e_alive *= ~(gone | (meets & ~free))
        age += alive
        return reward

    def _enemy_bullets(self, live: torch.Tensor, new: torch.Tensor, cell: torch.Tensor) -> None:
        """Bullets join at ``cell`` (heads right * 100 + y * 10 + x) where ``new``; all move a cell,
        ending the game on the sub's cell before or after (bullets off the screen would vanish)."""
        n, bullets = self.num_envs, self.e_bullets
        bullets.view(n, 200).scatter_add_(1, (cell * new).long(), new.to(torch.uint8))
        here = (self.sub_y * 10 + self.sub_x).long()[:, None, None].expand(n, 2, 1)
        on_sub = lambda: self.e_bullets.view(n, 2, 100).gather(2, here).view(n, 2).amax(1) > 0
        self.terminal |= live & on_sub()
        moved = torch.zeros_like(bullets)
        moved[:, 0, :, :9] = bullets[:, 0, :, 1:]
        moved[:, 1, :, 1:] = bullets[:, 1, :, :9]
        self.e_bullets = select_rows(live, moved, bullets)
        self.terminal |= live & on_sub()

    def _timers_and_surface(self, live: torch.Tensor) -> torch.Tensor:
        """Timers tick; oxygen runs out below the surface; arriving at the surface rescues (or ends)."""
        timers = self._counters[:, :3]
        timers -= ((timers > 0) & live[:, None]).to(INT)
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
        """Entities scattered as flat cells channel * 100 + y * 10 + x (an absent one repeats the
        sub's front cell, which is always set); enemy bullets and the gauges written as planes."""
        n = self.num_envs
        front = (self.sub_y * 10 + self.sub_x)[:, None]
        ex, ey, edx, _, _, is_sub, e_alive, _ = self.enemies.unbind(1)
        dx, dy, ddx, _, d_alive = self.divers.unbind(1)
        bx, by, _, b_alive = self.f_bullets.unbind(1)

        def cells(valid, base, x, y):
            return blend(valid > 0, base + (y * 10 + x).to(INT), front)

        def trail(valid, x, y, heading):  # the cell it came from
            x = x - heading
            return cells((valid > 0) & (x >= 0) & (x <= 9), 300, x, y)

        back = front + torch.where(self.sub_or, 99, 101)[:, None]
        index = torch.cat([front, back, cells(b_alive, 200, bx, by), trail(e_alive, ex, ey, edx),
                           cells(e_alive, 500 + 100 * is_sub.to(INT), ex, ey), trail(d_alive, dx, dy, ddx),
                           cells(d_alive, 900, dx, dy)], 1)
        obs = torch.zeros(n, 10, 10, 10, dtype=torch.bool, device=self.device)
        obs.view(n, 1000).scatter_(1, index.long(), True)
        obs[:, 4] = (self.e_bullets[:, 0] | self.e_bullets[:, 1]) > 0
        obs[:, 7, 9] = self._cols < (self.oxygen.clamp(min=0) * 10 // MAX_OXYGEN)[:, None]
        obs[:, 8, 9] = (self._cols >= 9 - self.diver_count[:, None]) & (self._cols < 9)
        return obs
