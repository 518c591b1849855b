"""The non-finite guard's host side: every step's `finite` flag (computed in the jitted step,
training/step.py) is kept on device and read in one transfer when the loop logs, evaluates or
saves, so there is no host sync per step, and no non-finite state is ever evaluated or saved.

Policies (train.nonfinite):
  stop  the first non-finite step raises NonFiniteError naming it and the latest checkpoint
        (which holds a finite state: saves are checked);
  skip  the step dropped its own update on device; it is counted (train/skipped_steps), and
        train.max_skipped non-finite steps in a row raise NonFiniteError.
"""

from __future__ import annotations

import jax

from metalm_jax.types import UserError


class NonFiniteError(UserError, FloatingPointError):
    """Training produced a non-finite loss, gradient norm or parameters."""


class NonFiniteGuard:
    def __init__(self, policy: str, max_skipped: int, latest_checkpoint):
        """`latest_checkpoint()` describes the checkpoint a rerun resumes from, for messages."""
        self.policy = policy
        self.max_skipped = max(int(max_skipped), 1)
        self.latest_checkpoint = latest_checkpoint
        self.unchecked: list = []  # (step, that step's metrics) not read yet
        self.skipped = 0  # non-finite steps dropped by the skip policy in this process's run
        self.in_row = 0

    def add(self, step: int, metrics: dict) -> None:
        self.unchecked.append((step, metrics))

    def check(self) -> None:
        """Reads the flags of the steps since the last check; raises NonFiniteError per policy."""
        if not self.unchecked:
            return
        flags = jax.device_get([m["finite"] for _, m in self.unchecked])
        steps, self.unchecked = self.unchecked, []
        for (step, metrics), finite in zip(steps, flags, strict=True):
            if finite:
                self.in_row = 0
                continue
            if self.policy == "stop":
                raise NonFiniteError(
                    f"step {step} is not finite ({_values(metrics)}): stopped without saving it; "
                    f"the latest checkpoint is {self.latest_checkpoint()} (lower optim.lr, "
                    f"check the data, or set train.nonfinite=skip)"
                )
            self.skipped += 1
            self.in_row += 1
            if self.in_row >= self.max_skipped:
                raise NonFiniteError(
                    f"step {step} is not finite, {self.in_row} steps in a row "
                    f"({_values(metrics)}; train.max_skipped={self.max_skipped}): stopped; the "
                    f"latest checkpoint is {self.latest_checkpoint()} (lower optim.lr or check "
                    f"the data)"
                )


def _values(metrics: dict) -> str:
    m = jax.device_get({k: metrics[k] for k in ("loss_sum", "weight", "grad_norm", "param_norm")})
    loss = float(m["loss_sum"]) / max(float(m["weight"]), 1.0)
    return (
        f"loss {loss:.4g}, gradient norm {float(m['grad_norm']):.4g}, "
        f"parameter norm after the update {float(m['param_norm']):.4g}"
    )
