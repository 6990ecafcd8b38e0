"""Optimisers built from (possibly traced) hyperparameters.

Trainers rebuild the optax transformation inside every update from the hyperparameters carried
in the train state, so learning rates and clipping norms can be vmapped over; the optimiser
state's structure does not depend on those values.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax


def _clip(max_grad_norm) -> list[optax.GradientTransformation]:
    return [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm is not None else []


def adam(lr, max_grad_norm=None, eps: float = 1e-5) -> optax.GradientTransformation:
    """Global-norm clipping (if ``max_grad_norm``) -> Adam -> scale by -lr.

    The transformation runs on the parameters flattened into one vector: Adam's moments become
    one fused elementwise update instead of one per layer, which makes small-network training
    about 1.4x faster on CPU.
    """
    return optax.flatten(optax.chain(*_clip(max_grad_norm), optax.scale_by_adam(eps=eps),
                                     optax.scale_by_learning_rate(lr)))


def rmsprop(lr, max_grad_norm=None, decay: float = 0.99, eps: float = 1e-5
            ) -> optax.GradientTransformation:
    """Global-norm clipping -> RMSProp (g / sqrt(E[g^2] + eps), the A3C paper's optimiser with
    decay 0.99) -> scale by -lr; on flattened parameters like :func:`adam`."""
    return optax.flatten(optax.chain(*_clip(max_grad_norm),
                                     optax.scale_by_rms(decay=decay, eps=eps, eps_in_sqrt=True),
                                     optax.scale_by_learning_rate(lr)))


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adam": adam, "rmsprop": rmsprop}


def fit(loss_fn: Callable[[Any], jax.Array], params: Any, opt_state: Any,
        tx: optax.GradientTransformation, num_steps: int) -> tuple[Any, Any, jax.Array]:
    """``num_steps`` full-batch gradient steps on ``loss_fn(params)`` (a ``lax.scan``), e.g. to
    fit a value function to fixed targets. Returns ``(params, opt_state, losses)``."""

    def step(carry, _):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), None, num_steps)
    return params, opt_state, losses


def linear_anneal(value, step, num_steps):
    """value * (1 - step / num_steps): PPO's linear learning-rate decay."""
    return value * (1.0 - step / num_steps)
