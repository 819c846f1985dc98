"""Training callbacks: no-op hooks that may only set flags on a :class:`Control`.

The loop calls, in this order::

    on_train_begin
    for each step:  on_step_begin -> (forward/backward/optimizer) -> on_step_end
                    -> [on_log] -> [on_evaluate] -> [on_save]
    on_evaluate (final) -> on_train_end

A callback reads the :class:`TrainState` and the read-only :class:`TrainContext` (model,
tokenizer, data, ...) and answers by setting flags on ``control``: ``should_stop``,
``should_save``, ``should_evaluate``, ``should_log``, or ``new_subset`` (store rows and
weights the loop swaps into the sampler: how re-selection changes the data). The loop
acts on the flags and clears them; a callback never steps the optimizer or moves data.

``state_dict`` / ``load_state_dict`` let a callback survive kill-and-resume (its state is
stored in every checkpoint).

Example
-------
>>> class StopAt(Callback):
...     def __init__(self, step): self.step = step
...     def on_step_end(self, state, control, ctx):
...         if state.step >= self.step: control.should_stop = True
>>> c = Control(); StopAt(3).on_step_end(TrainState(step=3), c, None); c.should_stop
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence


@dataclass
class TrainState:
    """What the loop has done so far (JSON-serialisable; saved in every checkpoint)."""

    step: int = 0
    epoch: int = 0
    samples_seen: int = 0
    tokens_seen: int = 0
    last_loss: float | None = None
    last_eval: dict = field(default_factory=dict)
    max_steps: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Control:
    """Flags a callback may set; the loop acts on them and resets them."""

    should_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False
    new_subset: Any = None  # (rows: (b,) int64 store rows, weights: (b,) float64 or None)

    def reset(self) -> None:
        self.should_save = self.should_evaluate = self.should_log = False
        self.new_subset = None


@dataclass(frozen=True)
class TrainContext:
    """Read-only view of the run handed to every hook."""

    model: Any
    tokenizer: Any
    recipe: Any
    data: Any
    config: Any
    run_dir: Any
    sampler: Any = None


class Callback:
    """Base class: every hook is a no-op."""

    def on_train_begin(self, state: TrainState, control: Control, ctx: TrainContext) -> None: ...

    def on_step_begin(self, state: TrainState, control: Control, ctx: TrainContext) -> None: ...

    def on_step_end(self, state: TrainState, control: Control, ctx: TrainContext) -> None: ...

    def on_log(self, state: TrainState, control: Control, ctx: TrainContext, logs: dict) -> None: ...

    def on_evaluate(self, state: TrainState, control: Control, ctx: TrainContext, metrics: dict) -> None: ...

    def on_save(self, state: TrainState, control: Control, ctx: TrainContext, path: Any) -> None: ...

    def on_train_end(self, state: TrainState, control: Control, ctx: TrainContext) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class CallbackList:
    """Calls one hook on every callback in order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be subsetlm.recipes.Callback instances, got {type(cb).__name__}")
        self.callbacks = list(callbacks)

    def __call__(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def state_dict(self) -> list[dict]:
        return [{"class": type(cb).__name__, "state": cb.state_dict()} for cb in self.callbacks]

    def load_state_dict(self, states: list[dict]) -> None:
        """Give each callback the saved state of the same class (in order); stateless ones may come and go."""
        saved = [s for s in states if s.get("state")]
        for cb in self.callbacks:
            name = type(cb).__name__
            match = next((s for s in saved if s["class"] == name), None)
            if match is not None:
                saved.remove(match)
                cb.load_state_dict(match["state"])
        if saved:
            raise ValueError(f"the checkpoint holds state of callbacks {[s['class'] for s in saved]} that this run "
                             f"does not have; resume with the same options (e.g. the same re-selection flags)")
