"""Trainer callbacks: progress into runtime.tuning.status, and SIGTERM -> checkpoint and stop."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from runtime.tuning.status import EventLog, Metrics, write_status

log = logging.getLogger(__name__)


class ProgressCallback(TrainerCallback):
    """Feeds the status file, the event log and the metrics from the trainer's state."""

    def __init__(self, output_dir: Path, events: EventLog, metrics: Metrics | None):
        self.output_dir = output_dir
        self.events = events
        self.metrics = metrics
        self.status: dict[str, Any] = {"state": "starting"}
        self._t0 = 0.0
        self._tokens0 = 0
        self._step0 = 0
        self._last_loss: float | None = None
        self._counted = 0
        self._resumed_from: int | None = None

    def _tokens(self, state) -> int:
        return int(getattr(state, "num_input_tokens_seen", 0) or 0)

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.monotonic()
        self._tokens0 = self._tokens(state)
        self._step0 = state.global_step
        if state.global_step:  # the trainer restored a checkpoint: say so for as long as this run lasts
            self._resumed_from = state.global_step
        if self.metrics:
            self.metrics.running.set(1)
            self.metrics.total.set(state.max_steps)
        self.update("training", state)
        self.events.write("train_begin", step=state.global_step, total=state.max_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "loss" in logs:
            self._last_loss = float(logs["loss"])
        self.events.write("log", step=state.global_step, **logs)

    def on_step_end(self, args, state, control, **kwargs):
        self.update("training", state)

    def on_save(self, args, state, control, **kwargs):
        self.events.write("checkpoint", step=state.global_step)

    def update(self, phase: str, state) -> None:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        tokens = self._tokens(state)
        steps = state.global_step - self._step0
        tps = (tokens - self._tokens0) / elapsed if steps else 0.0
        eta = (state.max_steps - state.global_step) * elapsed / steps if steps else None
        self.status = {
            "state": phase,
            "step": state.global_step,
            "total": state.max_steps,
            "epoch": round(state.epoch or 0.0, 4),
            "loss": self._last_loss,
            "tokens": tokens,
            "tokens_per_second": round(tps, 2),
            "eta_seconds": round(eta, 1) if eta is not None else None,
            "updated": round(time.time(), 3),
        }
        if self._resumed_from is not None:
            self.status["resumed_from_step"] = self._resumed_from
        write_status(self.output_dir, self.status)
        if self.metrics:
            self.metrics.step.set(state.global_step)
            self.metrics.tokens_per_s.set(tps)
            if self._last_loss is not None:
                self.metrics.loss.set(self._last_loss)
            if eta is not None:
                self.metrics.eta.set(eta)
            seen = tokens - self._tokens0 - self._counted
            if seen > 0:
                self.metrics.tokens.inc(seen)
                self._counted += seen


class StopOnSignal(TrainerCallback):
    """On SIGTERM (and SIGINT), save a checkpoint at the end of the current step and stop training."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.received: int | None = None
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.received = signum
        log.warning("received %s: saving a checkpoint after this step, then stopping", signal.Signals(signum).name)

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True
        return control

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
