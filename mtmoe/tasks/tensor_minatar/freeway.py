"""Freeway (minatar 1.0.15) as batched tensor code.

minatar's rules: the chicken stays in column 4 and starts on row 9; 'u'/'d' move it one row, but
only when its move timer is 0 (then the timer restarts at 3; it counts down every step).
Reaching row 0 gives +1, sends the chicken back to row 9 and redraws every car's speed and
direction (positions kept). Car i drives on row i + 1 and moves one cell (wrapping around) every
|speed| + 1 steps; a car in the chicken's row on column 4, before or after its move, sends the
chicken back to row 9. The episode ends after 2500 + 1 steps. A car's trail cell, behind it, is
drawn in the channel of its speed (speed1..speed5).

A reset (cars at column 0) and every crossing draw 8 speeds ``randint(1, 6)`` and 8 directions
``sign(rand() - 0.5)``. A direction draw of exactly 0.5 gives speed 0, which minatar keeps: the
car then moves left every step and its trail takes the channel of the previous car's trail (a
stale loop variable in minatar's ``state()``; for car 0 minatar raises, here no trail is drawn).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .game import TensorGame, randint, register_game

PLAYER_SPEED = 3
TIME_LIMIT = 2500
CARS = 8


@register_game
class Freeway(TensorGame):
    name = "freeway"
    channels = ("chicken", "car", "speed1", "speed2", "speed3", "speed4", "speed5")
    minimal_actions = "nud"
    draws = tuple(f"speed{i}" for i in range(CARS)) + tuple(f"dir{i}" for i in range(CARS))
    reset_draws = draws

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", ramping: bool = True):
        super().__init__(num_envs, device, ramping)
        n, dev = num_envs, self.device
        self.pos = torch.zeros(n, dtype=torch.long, device=dev)
        self.move_timer = torch.zeros_like(self.pos)
        self.terminate_timer = torch.zeros_like(self.pos)
        self.terminal = torch.ones(n, dtype=torch.bool, device=dev)  # no episode before the first reset
        self.car_x = torch.zeros(n, CARS, dtype=torch.long, device=dev)
        self.car_timer = torch.zeros_like(self.car_x)
        self.car_speed = torch.zeros_like(self.car_x)  # signed: + moves right
        # constants live outside vars(self) so that state_dict() holds state only
        self._const = SimpleNamespace(
            car_row=torch.arange(1, CARS + 1, device=dev), car_index=torch.arange(CARS, device=dev),
            row_offset=torch.arange(1, CARS + 1, device=dev) * 10,
            action_dy=torch.tensor([0, 0, -1, 0, 1, 0], device=dev))

    def _draw_speeds(self, u: torch.Tensor) -> torch.Tensor:
        """8 signed speeds from the 16 uniforms of a redraw."""
        return randint(u[:, :CARS], 1, 6) * torch.sign(u[:, CARS:] - 0.5).long()

    def reset(self, mask: torch.Tensor, u: torch.Tensor) -> None:
        speed, cars = self._draw_speeds(u), mask[:, None]
        torch.where(cars, speed, self.car_speed, out=self.car_speed)
        torch.where(cars, speed.abs(), self.car_timer, out=self.car_timer)
        self.car_x.masked_fill_(cars, 0)
        self.pos.masked_fill_(mask, 9)
        self.move_timer.masked_fill_(mask, PLAYER_SPEED)
        self.terminate_timer.masked_fill_(mask, TIME_LIMIT)
        self.terminal.masked_fill_(mask, False)

    def step(self, action: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self._const
        alive = ~self.terminal
        move = c.action_dy[action] * (self.move_timer == 0)
        move_timer = torch.where(move != 0, PLAYER_SPEED, self.move_timer)
        pos = (self.pos + move).clamp(0, 9)

        crossed = pos == 0
        redraw = crossed[:, None]
        new_speed = self._draw_speeds(u)
        speed = torch.where(redraw, new_speed, self.car_speed)
        timer = torch.where(redraw, new_speed.abs(), self.car_timer)
        pos = torch.where(crossed, 9, pos)

        moving = timer == 0
        timer = torch.where(moving, speed.abs(), timer - 1)
        car_x = torch.where(moving, (self.car_x + torch.where(speed > 0, 1, -1)) % 10, self.car_x)
        # only the car in the chicken's row can hit it, before or after its move
        at_chicken = (self.car_x == 4) | (moving & (car_x == 4))
        hit = (at_chicken & (c.car_row == pos[:, None])).any(1)
        pos = torch.where(hit, 9, pos)
        move_timer = move_timer - (move_timer > 0).long()

        for field, value in ((self.pos, pos), (self.move_timer, move_timer),
                             (self.terminate_timer, self.terminate_timer - 1)):
            torch.where(alive, value, field, out=field)
        for field, value in ((self.car_speed, speed), (self.car_timer, timer), (self.car_x, car_x)):
            torch.where(alive[:, None], value, field, out=field)
        self.terminal |= self.terminate_timer < 0
        return (crossed & alive).float(), self.terminal.clone()

    def observe(self) -> torch.Tensor:
        c, n = self._const, self.num_envs
        magnitude = self.car_speed.abs()
        # trail channel: 1 + |speed|; a speed-0 car takes the last earlier car's (minatar's stale variable)
        source = torch.where(magnitude > 0, c.car_index, -1).cummax(1).values
        trail_channel = magnitude.gather(1, source.clamp(min=0)) + 1
        back_x = (self.car_x - torch.where(self.car_speed > 0, 1, -1)) % 10
        # set cells as flat indices channel * 100 + y * 10 + x; a missing trail repeats the chicken's
        chicken = (self.pos * 10 + 4)[:, None]
        trail = torch.where(source >= 0, trail_channel * 100 + c.row_offset + back_x, chicken)
        cells = torch.cat([chicken, 100 + c.row_offset + self.car_x, trail], 1)
        obs = torch.zeros(n, len(self.channels) * 100, dtype=torch.bool, device=self.device)
        return obs.scatter_(1, cells, True).view(n, len(self.channels), 10, 10)
