"""MinAtar SpaceInvaders as batched tensor code (minatar 1.0.15 ``environments/space_invaders.py``).

Rules, in the order of minatar's ``act``:

- fire (if the shot timer is 0; it is then set to 5) puts a bullet in the bottom row at the
  cannon, else left / right move the cannon (clamped to 0..9);
- friendly bullets move up a row (those leaving the top vanish), enemy bullets move down a row
  (those leaving the bottom vanish); an enemy bullet or an alien on the cannon's cell ends the game;
- when the alien move timer is 0 it is reset to min(#aliens, move interval) and the wave moves:
  sideways by one column, or, if an alien touches the wall it heads for, down one row (rows
  *wrap*, as np.roll does; this only happens when an alien in the bottom row already ended the game)
  with the direction flipped; an alien landing on the cannon ends the game;
- when the alien shot timer is 0 it is reset to 10 and the alien lowest in the column nearest the
  cannon (ties: the left column) drops a bullet where it is;
- a friendly bullet on an alien removes both, +1 reward each;
- timers count down; a cleared wave is replaced by a new 4x6 block (the direction and timers
  carry over) and, with ramping, the move interval drops by one (down to 6) and the ramp index
  rises.

There is no randomness: ``draws`` and ``reset_draws`` are empty.
"""

from __future__ import annotations

import torch

from mtmoe.tasks.tensor_minatar.batch_ops import any_rows, select_rows
from mtmoe.tasks.tensor_minatar.game import TensorGame, register_game

SHOT_COOL_DOWN = 5
ENEMY_MOVE_INTERVAL = 12
ENEMY_SHOT_INTERVAL = 10
FIRE, LEFT, RIGHT = 5, 1, 3


@register_game
class SpaceInvaders(TensorGame):
    name = "space_invaders"
    channels = ("cannon", "alien", "alien_left", "alien_right", "friendly_bullet", "enemy_bullet")
    minimal_actions = "nlrf"

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", ramping: bool = True):
        super().__init__(num_envs, device, ramping)
        n, dev = num_envs, self.device
        long = dict(dtype=torch.long, device=dev)
        self.pos = torch.zeros(n, **long)
        self.f_bullet_map = torch.zeros(n, 10, 10, dtype=torch.bool, device=dev)
        self.e_bullet_map = torch.zeros_like(self.f_bullet_map)
        self.alien_map = torch.zeros_like(self.f_bullet_map)
        self.alien_dir = torch.zeros(n, **long)
        self.enemy_move_interval = torch.zeros(n, **long)
        self.alien_move_timer = torch.zeros(n, **long)
        self.alien_shot_timer = torch.zeros(n, **long)
        self.ramp_index = torch.zeros(n, **long)
        self.shot_timer = torch.zeros(n, **long)
        self.terminal = torch.zeros(n, dtype=torch.bool, device=dev)
        self._cols = torch.arange(10, device=dev)
        self._wave = torch.zeros(1, 10, 10, dtype=torch.bool, device=dev)
        self._wave[:, 0:4, 2:8] = True
        self._empty = torch.zeros_like(self._wave)
        self.reset(torch.ones(n, dtype=torch.bool, device=dev), torch.zeros(n, 0, device=dev))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor) and not k.startswith("_")}

    def reset(self, mask: torch.Tensor, u: torch.Tensor) -> None:
        grid = mask[:, None, None]
        self.pos.masked_fill_(mask, 5)
        self.f_bullet_map.masked_fill_(grid, False)
        self.e_bullet_map.masked_fill_(grid, False)
        self.alien_map.copy_(select_rows(mask, self._wave, self.alien_map))
        self.alien_dir.masked_fill_(mask, -1)
        self.enemy_move_interval.masked_fill_(mask, ENEMY_MOVE_INTERVAL)
        self.alien_move_timer.masked_fill_(mask, ENEMY_MOVE_INTERVAL)
        self.alien_shot_timer.masked_fill_(mask, ENEMY_SHOT_INTERVAL)
        self.ramp_index.masked_fill_(mask, 0)
        self.shot_timer.masked_fill_(mask, 0)
        self.terminal.masked_fill_(mask, False)

    def _at_cannon(self, grid: torch.Tensor) -> torch.Tensor:
        """(N,) bool: grid[9, pos] per env."""
        return grid[:, 9].gather(1, self.pos[:, None])[:, 0]

    def step(self, action: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        live = ~self.terminal
        fire = live & (action == FIRE) & (self.shot_timer == 0)
        self.f_bullet_map[:, 9] |= fire[:, None] & (self._cols == self.pos[:, None])
        self.shot_timer.masked_fill_(fire, SHOT_COOL_DOWN)
        self.pos.add_((live & (action == RIGHT)).long() - (live & (action == LEFT)).long()).clamp_(0, 9)

        # Bullets move (np.roll, then the wrapped row is cleared).
        up = torch.roll(self.f_bullet_map, -1, 1)
        up[:, 9] = False
        down = torch.roll(self.e_bullet_map, 1, 1)
        down[:, 0] = False
        self.f_bullet_map = select_rows(live, up, self.f_bullet_map)
        self.e_bullet_map = select_rows(live, down, self.e_bullet_map)
        self.terminal |= live & (self._at_cannon(self.e_bullet_map) | self._at_cannon(self.alien_map))

        self._move_aliens(live)
        self._alien_shot(live)

        kill = self.alien_map & self.f_bullet_map
        reward = kill.flatten(1).sum(1).float()
        self.alien_map &= ~kill
        self.f_bullet_map &= ~kill

        self.shot_timer -= ((self.shot_timer > 0) & live).long()
        self.alien_move_timer -= live.long()
        self.alien_shot_timer -= live.long()
        cleared = live & ~any_rows(self.alien_map)
        if self.ramping:
            ramp = cleared & (self.enemy_move_interval > 6)
            self.enemy_move_interval -= ramp.long()
            self.ramp_index += ramp.long()
        self.alien_map = select_rows(cleared, self._wave, self.alien_map)
        return reward, self.terminal.clone()

    def _move_aliens(self, live: torch.Tensor) -> None:
        """The wave's move when its timer is 0: sideways, or down with a turn at a wall."""
        aliens = self.alien_map
        move = live & (self.alien_move_timer == 0)
        count = aliens.flatten(1).sum(1)
        self.alien_move_timer.copy_(torch.where(move, torch.minimum(count, self.enemy_move_interval),
                                                self.alien_move_timer))
        left = self.alien_dir < 0
        at_wall = torch.where(left, aliens[:, :, 0].any(1), aliens[:, :, 9].any(1))
        turn = move & at_wall
        side = move & ~at_wall
        self.terminal |= turn & aliens[:, 9].any(1)
        self.alien_dir.copy_(torch.where(turn, -self.alien_dir, self.alien_dir))
        sideways = select_rows(left, torch.roll(aliens, -1, 2), torch.roll(aliens, 1, 2))
        moved = select_rows(turn, torch.roll(aliens, 1, 1), sideways)
        self.alien_map = select_rows(turn | side, moved, aliens)
        self.terminal |= move & self._at_cannon(self.alien_map)

    def _alien_shot(self, live: torch.Tensor) -> None:
        """When the shot timer is 0, the lowest alien of the nearest occupied column fires."""
        shoot = live & (self.alien_shot_timer == 0)
        self.alien_shot_timer.masked_fill_(shoot, ENEMY_SHOT_INTERVAL)
        occupied = self.alien_map.any(1)  # (N, 10) columns
        # minatar's stable sort by |col - pos|: nearer first, the left column first on a tie
        order = (self._cols - self.pos[:, None]).abs() * 2 + (self._cols > self.pos[:, None])
        col = torch.where(occupied, order, 100).argmin(1)
        in_col = self.alien_map.gather(2, col[:, None, None].expand(-1, 10, 1))[:, :, 0]
        row = torch.where(in_col, self._cols, -1).amax(1)
        shoot &= occupied.any(1)  # minatar would crash on an empty wave; it never has one here
        cell = (row.clamp(min=0) * 10 + col)[:, None]
        flat = self.e_bullet_map.view(-1, 100)
        flat.scatter_(1, cell, flat.gather(1, cell) | shoot[:, None])

    def observe(self) -> torch.Tensor:
        cannon = torch.zeros_like(self.alien_map)
        cannon[:, 9] = self._cols == self.pos[:, None]
        left, aliens, empty = self.alien_dir < 0, self.alien_map, self._empty
        return torch.stack([cannon, aliens, select_rows(left, aliens, empty), select_rows(left, empty, aliens),
                            self.f_bullet_map, self.e_bullet_map], 1)

    def difficulty(self) -> torch.Tensor:
        return self.ramp_index.clone()
