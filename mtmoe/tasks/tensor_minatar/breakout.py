"""Breakout (minatar 1.0.15) as batched tensor code.

minatar's rules: a paddle on the bottom row moves left/right one cell per step; the ball moves one
cell diagonally per step (directions 0..3: up-left, up-right, down-right, down-left). A side wall
reflects its horizontal direction, the top row its vertical one. Entering a brick cell breaks the
brick (+1), puts the ball back on its previous row and reflects it vertically, unless the ball
broke a brick on the previous step (``strike``): then it passes into the brick cell. On reaching
the bottom row: if no brick is left, the 3 rows refill; the ball bounces straight back if it came
from above the paddle, diagonally back if it lands on the paddle, else the episode ends. The
reset draws whether the ball starts at the left or the right edge of row 3.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .batch_ops import any_rows, set_rows
from .game import TensorGame, randint, register_game


@register_game
class Breakout(TensorGame):
    name = "breakout"
    channels = ("paddle", "ball", "trail", "brick")
    minimal_actions = "nlr"
    draws = ()
    reset_draws = ("ball_start",)

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", ramping: bool = True):
        super().__init__(num_envs, device, ramping)
        n, dev = num_envs, self.device

        def zeros(dtype=torch.long):
            return torch.zeros(n, dtype=dtype, device=dev)

        self.ball_x, self.ball_y, self.ball_dir = zeros(), zeros(), zeros()
        self.last_x, self.last_y, self.pos = zeros(), zeros(), zeros()
        self.brick_map = torch.zeros(n, 10, 10, dtype=torch.bool, device=dev)
        self.strike = zeros(torch.bool)
        self.terminal = torch.ones(n, dtype=torch.bool, device=dev)  # no episode before the first reset

        def table(values):
            return torch.tensor(values, device=dev)

        bricks = torch.zeros(1, 10, 10, dtype=torch.bool, device=dev)
        bricks[:, 1:4] = True
        # constants live outside vars(self) so that state_dict() holds state only
        self._const = SimpleNamespace(
            action_dx=table([0, -1, 0, 1, 0, 0]), dx=table([-1, 1, 1, -1]), dy=table([-1, -1, 1, 1]),
            flip_x=table([1, 0, 3, 2]), flip_y=table([3, 2, 1, 0]), paddle_turn=table([2, 3, 0, 1]),
            bricks=bricks)

    def reset(self, mask: torch.Tensor, u: torch.Tensor) -> None:
        c = self._const
        right = randint(u[:, 0], 0, 2)  # 0: (x 0, down-right), 1: (x 9, down-left)
        start_x, start_dir = right * 9, right + 2
        for field, value in ((self.ball_x, start_x), (self.last_x, start_x), (self.ball_dir, start_dir)):
            torch.where(mask, value, field, out=field)
        for field, value in ((self.ball_y, 3), (self.last_y, 3), (self.pos, 4)):
            field.masked_fill_(mask, value)
        self.strike.masked_fill_(mask, False)
        self.terminal.masked_fill_(mask, False)
        set_rows(mask, c.bricks, self.brick_map)

    def step(self, action: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, n = self._const, self.num_envs
        alive = ~self.terminal
        pos = (self.pos + c.action_dx[action]).clamp(0, 9)

        d = self.ball_dir
        new_x, new_y = self.ball_x + c.dx[d], self.ball_y + c.dy[d]
        wall = (new_x < 0) | (new_x > 9)
        new_x = new_x.clamp(0, 9)
        d = torch.where(wall, c.flip_x[d], d)
        top = new_y < 0
        new_y = new_y.clamp(0, 9)  # 9: a terminal env's ball may sit on the bottom row
        d = torch.where(top, c.flip_y[d], d)

        flat_bricks = self.brick_map.view(n, 100)
        cell = (new_y * 10 + new_x)[:, None]
        cell_brick = flat_bricks.gather(1, cell).squeeze(1)
        brick = cell_brick & ~top
        hit = brick & ~self.strike & alive
        flat_bricks.scatter_(1, cell, (cell_brick & ~hit)[:, None])
        new_y = torch.where(hit, self.ball_y, new_y)
        d = torch.where(hit, c.flip_y[d], d)

        bottom = ~top & ~brick & (new_y == 9)
        refill = bottom & alive & ~any_rows(flat_bricks)
        set_rows(refill, c.bricks, self.brick_map)  # no brick left: the 3 rows come back
        straight = bottom & (self.ball_x == pos)
        angled = bottom & ~straight & (new_x == pos)
        d = torch.where(straight, c.flip_y[d], torch.where(angled, c.paddle_turn[d], d))
        new_y = torch.where(straight | angled, self.ball_y, new_y)

        for field, value in ((self.pos, pos), (self.last_x, self.ball_x), (self.last_y, self.ball_y),
                             (self.ball_x, new_x), (self.ball_y, new_y), (self.ball_dir, d),
                             (self.strike, brick)):
            torch.where(alive, value, field, out=field)
        self.terminal |= bottom & ~straight & ~angled
        return hit.float(), self.terminal.clone()

    def observe(self) -> torch.Tensor:
        n = self.num_envs
        obs = torch.zeros(n, 4, 100, dtype=torch.bool, device=self.device)
        obs[:, 3] = self.brick_map.view(n, 100)
        # paddle, ball and trail cells as flat indices channel * 100 + y * 10 + x
        ball, trail = self.ball_y * 10 + self.ball_x, self.last_y * 10 + self.last_x
        cells = torch.stack([90 + self.pos, 100 + ball, 200 + trail], 1)
        return obs.view(n, 400).scatter_(1, cells, True).view(n, 4, 10, 10)
