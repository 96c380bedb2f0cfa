"""Asterix (minatar 1.0.15) as batched tensor code.

minatar's rules: the player starts at (x 5, y 5) and moves one cell per step in the four
directions (x in 0..9, y in 1..8). Entities live in 8 slots, slot i on row i + 1. When the spawn
timer is 0 an entity spawns (timer restarts at spawn_speed): it moves right from x 0 or left from
x 9 (1/2 each) and is gold with probability 1/3, in a slot drawn uniformly among the free ones
(none free: nothing spawns; the draws are made either way). After the player's move, an entity on
the player's cell is collected (+1, removed) if gold, else ends the episode (the step still runs
to its end). Every move_speed + 1 steps (move timer 0) all entities move one cell, leave when
they cross the edge, and the player's cell is checked again. With ramping, every 102 steps the
spawn interval shrinks by 1 (down to 1) and on every other ramp the move interval too (down to
1); ramping stops once both are 1. Trails mark the cell behind each entity.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .game import TensorGame, randint, register_game

RAMP_INTERVAL = 100
INIT_SPAWN_SPEED = 10
INIT_MOVE_INTERVAL = 5
SLOTS = 8


@register_game
class Asterix(TensorGame):
    name = "asterix"
    channels = ("player", "enemy", "trail", "gold")
    minimal_actions = "nlurd"
    draws = ("lr", "gold", "slot")
    reset_draws = ()

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", ramping: bool = True):
        super().__init__(num_envs, device, ramping)
        n, dev = num_envs, self.device

        def zeros(*shape, dtype=torch.long):
            return torch.zeros(n, *shape, dtype=dtype, device=dev)

        self.player_x, self.player_y = zeros(), zeros()
        # slot fields; a free slot holds x 0, lr False, gold False
        self.entity_x, self.entity_alive = zeros(SLOTS), zeros(SLOTS, dtype=torch.bool)
        self.entity_lr, self.entity_gold = zeros(SLOTS, dtype=torch.bool), zeros(SLOTS, dtype=torch.bool)
        self.spawn_speed, self.spawn_timer = zeros(), zeros()
        self.move_speed, self.move_timer = zeros(), zeros()
        self.ramp_timer, self.ramp_index = zeros(), zeros()
        self.terminal = torch.ones(n, dtype=torch.bool, device=dev)  # no episode before the first reset
        # constants live outside vars(self) so that state_dict() holds state only
        self._const = SimpleNamespace(row=torch.arange(1, SLOTS + 1, device=dev),
                                      row_offset=torch.arange(1, SLOTS + 1, device=dev) * 10,
                                      action_dx=torch.tensor([0, -1, 0, 1, 0, 0], device=dev),
                                      action_dy=torch.tensor([0, 0, -1, 0, 1, 0], device=dev))

    def reset(self, mask: torch.Tensor, u: torch.Tensor) -> None:
        for field, value in ((self.player_x, 5), (self.player_y, 5), (self.spawn_speed, INIT_SPAWN_SPEED),
                             (self.spawn_timer, INIT_SPAWN_SPEED), (self.move_speed, INIT_MOVE_INTERVAL),
                             (self.move_timer, INIT_MOVE_INTERVAL), (self.ramp_timer, RAMP_INTERVAL),
                             (self.ramp_index, 0), (self.terminal, False)):
            field.masked_fill_(mask, value)
        for field in (self.entity_x, self.entity_alive, self.entity_lr, self.entity_gold):
            field.masked_fill_(mask[:, None], 0)

    def _spawn(self, spawn: torch.Tensor, u: torch.Tensor):
        """Slot fields after a spawn where ``spawn``: the k-th free slot, k drawn from u[:, 2]."""
        lr, gold = u[:, 0] < 1 / 2, u[:, 1] < 1 / 3
        free = ~self.entity_alive
        k = randint(u[:, 2], 0, free.sum(1))
        chosen = free & (free.cumsum(1) - 1 == k[:, None]) & spawn[:, None]
        x = torch.where(chosen, torch.where(lr, 0, 9)[:, None], self.entity_x)
        return (x, self.entity_alive | chosen, torch.where(chosen, lr[:, None], self.entity_lr),
                torch.where(chosen, gold[:, None], self.entity_gold))

    def step(self, action: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self._const
        alive = ~self.terminal
        spawn = self.spawn_timer == 0
        x, present, lr, gold = self._spawn(spawn, u)
        spawn_timer = torch.where(spawn, self.spawn_speed, self.spawn_timer)

        px = (self.player_x + c.action_dx[action]).clamp(0, 9)
        py = (self.player_y + c.action_dy[action]).clamp(1, 8)
        in_player_row = c.row == py[:, None]
        touch = present & in_player_row & (x == px[:, None])
        collected, caught = touch & gold, touch & ~gold
        present = present & ~collected

        moving = self.move_timer == 0
        move_timer = torch.where(moving, self.move_speed, self.move_timer)
        x = x + torch.where(lr, 1, -1) * (present & moving[:, None])
        present = present & (x >= 0) & (x <= 9)
        touch = present & in_player_row & (x == px[:, None]) & moving[:, None]
        collected2, caught = touch & gold, caught | (touch & ~gold)
        present = present & ~collected2
        reward = (collected | collected2).sum(1)
        x, lr, gold = x * present, lr & present, gold & present  # free slots back to the blank

        for field, value in ((self.entity_x, x), (self.entity_alive, present), (self.entity_lr, lr),
                             (self.entity_gold, gold)):
            torch.where(alive[:, None], value, field, out=field)
        for field, value in ((self.player_x, px), (self.player_y, py), (self.spawn_timer, spawn_timer - 1),
                             (self.move_timer, move_timer - 1)):
            torch.where(alive, value, field, out=field)
        if self.ramping:
            self._ramp(alive)
        self.terminal |= caught.any(1)
        return (reward * alive).float(), self.terminal.clone()

    def _ramp(self, alive: torch.Tensor) -> None:
        """minatar's difficulty ramp, in envs where ``alive``."""
        active = alive & ((self.spawn_speed > 1) | (self.move_speed > 1))
        wait = active & (self.ramp_timer >= 0)
        ramp = active & ~wait
        self.move_speed -= (ramp & (self.move_speed > 1) & (self.ramp_index % 2 == 1)).long()
        self.spawn_speed -= (ramp & (self.spawn_speed > 1)).long()
        self.ramp_index += ramp.long()
        self.ramp_timer -= wait.long()
        self.ramp_timer.masked_fill_(ramp, RAMP_INTERVAL)

    def difficulty(self) -> torch.Tensor:
        return self.ramp_index.clone()

    def observe(self) -> torch.Tensor:
        c, n = self._const, self.num_envs
        # set cells as flat indices channel * 100 + y * 10 + x; a missing one repeats the player's
        player = (self.player_y * 10 + self.player_x)[:, None]
        body = torch.where(self.entity_alive, 100 + self.entity_gold * 200 + c.row_offset + self.entity_x, player)
        back_x = self.entity_x - torch.where(self.entity_lr, 1, -1)
        trail_seen = self.entity_alive & (back_x >= 0) & (back_x <= 9)
        trail = torch.where(trail_seen, 200 + c.row_offset + back_x, player)
        obs = torch.zeros(n, 400, dtype=torch.bool, device=self.device)
        return obs.scatter_(1, torch.cat([player, body, trail], 1), True).view(n, 4, 10, 10)
