"""A fault injected from outside, for tests only: Python imports this at start-up when its folder is on PYTHONPATH.

With KAITO_TEST_ENGINE_FAULT set to a file path, the transformers backend's model raises in its forward pass once
that file exists: the generation loop then dies as it would on a real defect (a CUDA error, a kernel bug), and the
server's reaction can be watched from the outside. Nothing in the product knows about it.
"""

import os

_TRIGGER = os.environ.get("KAITO_TEST_ENGINE_FAULT")

if _TRIGGER:
    from runtime.inference.backends import transformers as _backend

    _start_engine = _backend.TransformersBackend._start_engine

    def _faulty_start_engine(self, device):
        forward = self.model.forward

        def forward_until_triggered(*args, **kwargs):
            if os.path.exists(_TRIGGER):
                raise RuntimeError("injected engine fault (tests/inference/faults)")
            return forward(*args, **kwargs)

        self.model.forward = forward_until_triggered
        _start_engine(self, device)

    _backend.TransformersBackend._start_engine = _faulty_start_engine
