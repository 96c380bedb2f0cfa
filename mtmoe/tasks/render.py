"""Single-env gymnasium faces of the backends that can draw themselves, for videos (`mtmoe evaluate --video`).

``make_render_env(task)`` returns a gymnasium Env with ``render_mode="rgb_array"`` whose
observations are one row of the task's backend layout (pixels channels first, vectors float32),
whose actions are the backend's own (local) actions, and whose step info carries ``success``
where the task defines it. Wrap it in gymnasium's ``RecordVideo`` to write mp4s (moviepy).

A backend gains videos by registering a factory (``@renderer("name")``), as backends register
their vector envs (Sample Factory's env registry is the model). A backend without one, or one
whose renderer cannot start here (no OpenGL for MuJoCo, say), gives an MtmoeError naming it.
"""

from __future__ import annotations

import colorsys
import os
from typing import Callable

import gymnasium as gym
import numpy as np

from mtmoe.errors import MtmoeError
from mtmoe.tasks.schema import TaskSpec

RENDERERS: dict[str, Callable[[TaskSpec], gym.Env]] = {}
PREPARE: dict[str, Callable[[], None]] = {}


def renderer(backend: str, prepare: Callable[[], None] | None = None):
    """Register `factory(task) -> gym.Env` as the render env of a backend; `prepare()` runs before
    any env of the run is built (e.g. choosing MuJoCo's GL backend, which mujoco reads on import)."""

    def register(factory: Callable[[TaskSpec], gym.Env]):
        RENDERERS[backend] = factory
        if prepare is not None:
            PREPARE[backend] = prepare
        return factory

    return register


def _no_renderer(task: TaskSpec) -> MtmoeError:
    return MtmoeError(f"--video: the {task.backend} backend (task {task.id}) cannot render videos; "
                      f"backends that can: {', '.join(sorted(RENDERERS))}")


def prepare_video(tasks: list[TaskSpec]) -> None:
    """Before anything is built or played: every task's backend has a renderer, and its setup runs."""
    for task in tasks:
        if task.backend not in RENDERERS:
            raise _no_renderer(task)
    for backend in dict.fromkeys(t.backend for t in tasks):
        if backend in PREPARE:
            PREPARE[backend]()


def make_render_env(task: TaskSpec, seed: int | None = None) -> gym.Env:
    """The task's render env, checked once (reset and one frame): errors are one line naming the backend."""
    if task.backend not in RENDERERS:
        raise _no_renderer(task)
    env = None
    try:
        env = RENDERERS[task.backend](task)
        env.reset(seed=seed)
        frame = env.render()
    except MtmoeError:
        raise
    except Exception as e:  # no display / OpenGL, a missing package, a simulator refusing to draw
        if env is not None:
            _quiet_close(env)
        reason = (str(e).strip().splitlines() or [""])[0][:160]
        hint = " (MuJoCo draws through MUJOCO_GL: egl or osmesa need their libraries)" if task.backend in (
            "mujoco", "metaworld") else ""
        raise MtmoeError(f"--video: the {task.backend} backend cannot render task {task.id} here: "
                         f"{type(e).__name__}: {reason}{hint}") from None
    if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3):
        _quiet_close(env)
        raise MtmoeError(f"--video: the {task.backend} backend drew no RGB frame for task {task.id} "
                         f"(got {type(frame).__name__})")
    return env


def _quiet_close(env: gym.Env) -> None:
    try:
        env.close()
    except Exception:  # closing a half-built renderer must not hide the error that matters
        pass


def _limit(env: gym.Env, task: TaskSpec) -> gym.Env:
    return gym.wrappers.TimeLimit(env, task.max_episode_steps) if task.max_episode_steps else env


# ---------------------------------------------------------------------------------------------- MinAtar


def minatar_palette(channels: int) -> np.ndarray:
    """(channels + 1, 3) uint8: black for empty cells, then one evenly spaced hue per channel."""
    hues = [colorsys.hsv_to_rgb(k / channels, 0.75, 1.0) for k in range(channels)]
    return np.vstack([[0, 0, 0], np.round(np.array(hues) * 255)]).astype(np.uint8)


def minatar_frame(state_chw: np.ndarray, scale: int = 16) -> np.ndarray:
    """A MinAtar observation (C, 10, 10) of 0/1 as an RGB grid (10*scale, 10*scale, 3); the last
    channel set in a cell gives its colour (as MinAtar's own display does)."""
    c = state_chw.shape[0]
    index = np.max(state_chw.astype(np.int64) * np.arange(1, c + 1)[:, None, None], axis=0)
    rgb = minatar_palette(c)[index]
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


@renderer("minatar")
def _minatar(task: TaskSpec) -> gym.Env:
    from mtmoe.tasks.backends.minatar import MinAtarEnv

    class MinAtarRenderEnv(MinAtarEnv):
        metadata = {"render_modes": ["rgb_array"], "render_fps": 15}
        render_mode = "rgb_array"

        def render(self):
            return minatar_frame(self.observe())

    o = task.options
    return _limit(MinAtarRenderEnv(task.env, o.sticky_action_prob, o.difficulty_ramping, o.minimal_action_set), task)


# ---------------------------------------------------------------------------------------------- gymnasium ids


def _backend_layout(env: gym.Env, name: str) -> gym.Env:
    """Observations as the vector backends hand them over: HWC images channels first, vectors float32."""
    from mtmoe.tasks.backends.gym import spec_from_spaces

    spec = spec_from_spaces(name, env.observation_space, env.action_space)
    space = env.observation_space
    if spec.obs_kind == "pixels":
        new = gym.spaces.Box(0, int(space.high.max()), spec.obs_shape, np.uint8)
        return gym.wrappers.TransformObservation(env, lambda o: np.ascontiguousarray(o.transpose(2, 0, 1)), new)
    new = gym.spaces.Box(-np.inf, np.inf, space.shape, np.float32)
    return gym.wrappers.TransformObservation(env, lambda o: np.asarray(o, np.float32), new)


@renderer("gym")
def _gym(task: TaskSpec) -> gym.Env:
    from mtmoe.tasks.backends.gym import check_gym_id

    problem = check_gym_id(task.env)  # imports the id's module ('module:Id', ALE/...)
    if problem:
        raise MtmoeError(f"--video: {problem}")
    kwargs = dict(task.options.env_kwargs)
    if task.max_episode_steps:
        kwargs["max_episode_steps"] = task.max_episode_steps
    return _backend_layout(gym.make(task.env, render_mode="rgb_array", **kwargs), task.env)


def _mujoco_gl() -> None:
    """MuJoCo draws off screen through MUJOCO_GL (egl by default here), chosen when mujoco is imported."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import mujoco  # noqa: F401
    except Exception as e:  # e.g. MUJOCO_GL=osmesa without libOSMesa: PyOpenGL fails inside the import
        reason = (str(e).strip().splitlines() or [""])[0][:120]
        raise MtmoeError(f"--video: MuJoCo cannot start its GL backend MUJOCO_GL={os.environ['MUJOCO_GL']} here "
                         f"({type(e).__name__}: {reason}); try MUJOCO_GL=egl or osmesa with its libraries") from None


@renderer("mujoco", prepare=_mujoco_gl)
def _mujoco(task: TaskSpec) -> gym.Env:
    kwargs = dict(task.options.env_kwargs)
    if task.max_episode_steps:
        kwargs["max_episode_steps"] = task.max_episode_steps
    return _backend_layout(gym.make(task.env, render_mode="rgb_array", **kwargs), task.env)


# ---------------------------------------------------------------------------------------------- ALE


class _FireReset(gym.Wrapper):
    """Press FIRE after reset in games that need it to start (the ALE vector env's use_fire_reset)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.fire = env.unwrapped.get_action_meanings().index("FIRE")

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(self.fire)
        return (self.env.reset(**kwargs) if terminated or truncated else (obs, info))


class _FoldColour(gym.ObservationWrapper):
    """Stacked RGB frames (stack, H, W, 3) -> (stack * 3, H, W), as the ALE backend folds them."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        s, h, w, c = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 255, (s * c, h, w), np.uint8)

    def observation(self, obs):
        s, h, w, c = obs.shape
        return np.ascontiguousarray(np.asarray(obs).transpose(0, 3, 1, 2)).reshape(s * c, h, w)


@renderer("ale")
def _ale(task: TaskSpec) -> gym.Env:
    """The ALE backend's preprocessing with gymnasium's wrappers on one emulator: close to the C++
    vector env (max-pool, resize, grayscale, stack, no-ops, FIRE), not bit-identical."""
    from ale_py.env import AtariEnv

    from mtmoe.tasks.backends.ale import FRAMES_PER_EPISODE, rom_name

    o = task.options
    frames = task.max_episode_steps * o.frameskip if task.max_episode_steps else FRAMES_PER_EPISODE
    env = AtariEnv(game=rom_name(task.env), frameskip=1, repeat_action_probability=o.repeat_action_probability,
                   full_action_space=o.full_action_space, max_num_frames_per_episode=frames, render_mode="rgb_array")
    env.metadata = {**env.metadata, "render_fps": 60 // o.frameskip}
    env = gym.wrappers.AtariPreprocessing(env, noop_max=o.noop_max, frame_skip=o.frameskip, screen_size=o.size,
                                          grayscale_obs=o.grayscale, terminal_on_life_loss=False)
    if o.use_fire_reset and "FIRE" in env.unwrapped.get_action_meanings():
        env = _FireReset(env)
    env = gym.wrappers.FrameStackObservation(env, o.stack)
    return env if o.grayscale else _FoldColour(env)


# ---------------------------------------------------------------------------------------------- Meta-World


class MetaWorldRenderEnv(gym.Env):
    """One Meta-World task as the metaworld backend plays it (goal per episode, 500-step truncation)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}
    render_mode = "rgb_array"

    def __init__(self, task: TaskSpec):
        from mtmoe.tasks.backends.metaworld import EPISODE_STEPS, _benchmark, task_name

        o = task.options
        cls, goals = _benchmark(task_name(task.env), o.benchmark_seed)
        self.goals = goals if o.goals == "random" else goals[:1]
        self.env = cls(render_mode="rgb_array", reward_function_version=o.reward_function_version)
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space
        self.max_steps = min(task.max_episode_steps or EPISODE_STEPS, EPISODE_STEPS)
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.env.seed(seed)
        self.env.set_task(self.goals[int(self.np_random.integers(len(self.goals)))])
        obs, info = self.env.reset()
        self.steps = 0
        return np.asarray(obs, np.float32), info

    def step(self, action):
        obs, reward, _, _, info = self.env.step(np.asarray(action, np.float32))
        self.steps += 1
        return np.asarray(obs, np.float32), float(reward), False, self.steps >= self.max_steps, info

    def render(self):
        return self.env.render()

    def close(self):
        self.env.close()


@renderer("metaworld", prepare=_mujoco_gl)
def _metaworld(task: TaskSpec) -> gym.Env:
    return MetaWorldRenderEnv(task)


# ---------------------------------------------------------------------------------------------- Procgen


class ProcgenRenderEnv(gym.Env):
    """One Procgen game (gym3, one slot) with its 512x512 render frames; episodes end when gym3 says `first`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}
    render_mode = "rgb_array"

    def __init__(self, task: TaskSpec):
        from mtmoe.tasks.backends.procgen import ProcgenVecEnv

        self.vec = ProcgenVecEnv(task.env, 1, task.options, task.max_episode_steps)
        self.observation_space = gym.spaces.Box(0, 255, (3, 64, 64), np.uint8)
        self.action_space = gym.spaces.Discrete(self.vec.spec.n_actions)
        self.pending = None  # the next episode's first observation (gym3 resets by itself)

    def _build(self, seed: int | None):
        return self.vec._build(seed, render_mode="rgb_array")  # info[0]["rgb"]: the 512x512 frame

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or self.pending is None:
            self.vec.env.close()
            self.vec.env = self._build(seed)
            _, ob, _ = self.vec.env.observe()
            self.pending = ob["rgb"][0]
        obs, self.pending = self.pending, None
        return np.ascontiguousarray(obs.transpose(2, 0, 1)), {}

    def step(self, action):
        self.vec.env.act(np.asarray([int(action)], np.int32))
        reward, ob, first = self.vec.env.observe()
        if first[0]:
            self.pending = ob["rgb"][0]
        return np.ascontiguousarray(ob["rgb"][0].transpose(2, 0, 1)), float(reward[0]), bool(first[0]), False, {}

    def render(self):
        return self.vec.env.get_info()[0]["rgb"]

    def close(self):
        self.vec.close()


@renderer("procgen")
def _procgen(task: TaskSpec) -> gym.Env:
    return ProcgenRenderEnv(task)
