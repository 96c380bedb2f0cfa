"""The built-in environment backends; importing this package registers them.

Each module registers one backend (see ``mtmoe.tasks.backend``) and imports its simulator only
inside its factory, so importing the package stays fast.
"""

from mtmoe.tasks.backends import ale, gym, metaworld, minatar, mujoco, procgen

__all__ = ["ale", "gym", "metaworld", "minatar", "mujoco", "procgen"]
