"""The transformers backend: one model, transformers' own continuous batching, LoRA adapters through peft.

Engine: `model.init_continuous_batching()` (transformers' ContinuousBatchingManager, the engine behind
`transformers serve --continuous-batching`). It schedules requests in flight (requests join and leave the running
batch every step), streams per token and cancels. We did not write a scheduler. What it lacks we add around it:
- per-request sampling (temperature, top-k, top-p, seed): backends/sampling.py, a CB logits processor; CB's own
  per-request warpers sort the vocabulary twice per row and step and cannot seed per request;
- stop strings, `n`: in the serving layer (text-level stop; `n` = n requests);
- admission (429) and adapter scheduling: here and in serving.py.

Adapters and batching: CB runs all requests of a step through one forward pass of one set of weights, and peft
cannot switch adapters per token inside CB's flattened batch. So requests are grouped by model: the
`AdapterScheduler` admits requests of the active model; when another model's requests wait, it stops admitting,
lets the running ones finish, switches peft's active adapter (CB paused) and admits the waiting group. Adapters share
the base weights (one copy in memory); batching works within a model; mixed traffic is served in turns. Prefix
sharing of KV blocks is off, as a cached prefix computed under one adapter is wrong for another.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from runtime.inference.backends.base import Delta, EngineStats, GenerationRequest, ModelCard
from runtime.inference.backends.chat import chat_prompt_ids
from runtime.inference.errors import BadRequest, ModelNotFound, NotImplementedInBackend, ServiceUnavailable
from runtime.inference.limits import longest_token_chars
from runtime.inference.settings import ServerSettings, SettingsError, model_location
from runtime.kaito.adapters import AdapterFolderError, adapter_folders, check_adapter_folder
from runtime.kaito.templates import TemplateNotFound, preset_template_path, read_template

log = logging.getLogger(__name__)

COMBINED_ADAPTER = "combined_adapter"
ENGINE_CHECK_S = 1.0
"""How often a request waiting for its next token checks that the engine still runs."""


def discover_adapters(adapters_dir: str | Path) -> dict[str, Path]:
    """Every adapter under `adapters_dir` (Kaito's layout; the rule is runtime.kaito.adapters'), by name; a bad
    one is a SettingsError naming it, so the server does not start without an adapter it was given."""
    try:
        return {name: path for name, (path, _config) in adapter_folders(adapters_dir).items()}
    except AdapterFolderError as err:
        raise SettingsError(f"adapters_dir: {err}") from None


def adapter_strength(name: str, environ=os.environ) -> float:
    """Kaito's per-adapter strength: the environment variable named after the adapter, 0..1, default 1."""
    raw = environ.get(name)
    if raw in (None, ""):
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"adapter strength: environment variable {name}={raw!r} is not a number in 0..1") from None
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"adapter strength: environment variable {name}={value} must be within 0..1")
    return value


class AdapterScheduler:
    """Admits requests one model (base or adapter) at a time; switches the active adapter when idle.

    Waiters are served in arrival order by model group: a request for the active model enters at once unless a
    request for another model has waited longer; a request for another model enters when nothing is running and
    it is the oldest waiter. So no model starves, and the switch happens with nothing in flight.
    """

    def __init__(self, switch, current: str) -> None:
        self._switch = switch  # blocking callable(model_name), run in a worker thread
        self._cond = asyncio.Condition()
        self.current = current
        self.active = 0
        self._waiters: deque[tuple[object, str]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _can_enter(self, token: object, model: str) -> bool:
        if model == self.current:
            for other_token, other_model in self._waiters:
                if other_token is token:
                    return True
                if other_model != model:
                    return False
            return True
        return self.active == 0 and self._waiters[0][0] is token

    async def acquire(self, model: str) -> None:
        async with self._cond:
            if model == self.current and not self._waiters:
                self.active += 1
                return
            token = object()
            self._waiters.append((token, model))
            try:
                await self._cond.wait_for(lambda: self._can_enter(token, model))
                if model != self.current:
                    await asyncio.to_thread(self._switch, model)
                    self.current = model
                self.active += 1
            finally:
                self._waiters = deque(w for w in self._waiters if w[0] is not token)
                self._cond.notify_all()

    async def release(self) -> None:
        async with self._cond:
            self.active -= 1
            self._cond.notify_all()


class TransformersBackend:
    """Loads the preset's model and serves it (see the module docstring)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.base_name = settings.resolved_name()
        self.default_model = self.base_name
        self.max_model_len = 0
        self.max_token_chars = 0
        self.model_root = ""
        self._ready = False
        self._adapters: dict[str, str] = {}  # served name -> source path
        self._pulled: dict[str, Path] = {}  # adapters pulled from a registry -> their temporary folder
        self._peft = None
        self._inflight: dict[str, bool] = {}  # request id -> has produced a token
        self._scheduler: AdapterScheduler | None = None
        self._adapter_lock: asyncio.Lock | None = None
        self.manager = None
        self.sampler = None

    # --- loading ---

    def load(self) -> None:
        """Load tokenizer, model and adapters, start the engine. Blocking (minutes for big models)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import presets

        s = self.settings
        try:
            preset = presets.get(s.preset)
        except presets.UnknownPreset as err:
            raise SettingsError(f"preset: {err}") from None
        if "transformers" not in preset.runtimes:
            raise SettingsError(f"preset: {preset.name} does not support the transformers runtime")
        adapters = discover_adapters(s.adapters_dir)  # checked before any weights are read
        if adapters and not preset.lora_serving:
            raise SettingsError(f"adapters_dir: preset {preset.name} does not allow LoRA adapters")
        location, extra = model_location(self.settings.model_path, preset)
        self.model_root = location
        trust = preset.trust_remote_code if s.trust_remote_code is None else s.trust_remote_code
        dtype_name = s.dtype or str(preset.transformers_params.get("torch_dtype", "auto"))
        device = s.device if s.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cpu" and s.torch_threads:
            torch.set_num_threads(s.torch_threads)

        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust, **extra)
        if s.chat_template:
            try:
                tokenizer.chat_template = read_template(s.chat_template)
            except TemplateNotFound as err:
                raise SettingsError(f"chat_template: {err}") from None
        elif preset.chat_template:  # the preset's own template file (presets/chat_templates/)
            tokenizer.chat_template = preset_template_path(preset).read_text()
        kwargs: dict = {"trust_remote_code": trust, "attn_implementation": "sdpa", **extra}
        dtype = "auto" if dtype_name == "auto" else getattr(torch, dtype_name)
        if s.quantization == "bnb-4bit":
            from transformers import BitsAndBytesConfig

            # NF4 weights compute in a 16-bit dtype: the one asked for, else bfloat16 (what QLoRA trains with).
            compute = dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute
            )
            kwargs["device_map"] = device if device == "cpu" else "auto"
        else:
            kwargs["dtype"] = dtype
        log.info("loading %s (%s, dtype %s, device %s, quantization %s)", location, preset.name, dtype_name, device,
                 s.quantization)
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
        if "device_map" not in kwargs:
            model.to(device)
        model.eval()
        self.tokenizer = tokenizer
        self.model = model
        config_len = getattr(model.config.get_text_config(), "max_position_embeddings", None) or preset.context_length
        self.max_model_len = min(s.max_model_len or config_len, config_len)
        self.max_token_chars = longest_token_chars(tokenizer)
        self._eos = _eos_ids(model, tokenizer)

        if adapters:
            self._load_startup_adapters(adapters)
        self._start_engine(device)
        self._ready = True
        log.info("serving %s; models: %s", self.base_name, ", ".join(c.id for c in self.models()))

    def _load_startup_adapters(self, adapters: dict[str, Path]) -> None:
        from peft import PeftModel

        for name, path in adapters.items():
            if name in (self.base_name, COMBINED_ADAPTER):
                raise SettingsError(f"adapters_dir: adapter {path} may not be named {name!r} (a reserved model name)")
            strength = adapter_strength(name)
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=False)
            else:
                self._peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
            self._adapters[name] = str(path)
            log.info("adapter %s from %s (strength %.2f)", name, path, strength)
        weights = [adapter_strength(n) for n in adapters]
        # Kaito serves the strength-weighted combination of all adapters by default.
        self._peft.add_weighted_adapter(
            adapters=list(adapters), weights=weights, adapter_name=COMBINED_ADAPTER,
            combination_type=self.settings.adapter_combination,
        )
        self._adapters[COMBINED_ADAPTER] = f"combination of {', '.join(adapters)}"
        self.default_model = COMBINED_ADAPTER

    def _start_engine(self, device: str) -> None:
        import torch
        from transformers import ContinuousBatchingConfig, GenerationConfig

        from runtime.inference.backends import sampling

        s = self.settings
        # Greedy in CB (argmax); sampled requests are drawn by our RequestSampler (backends/sampling.py).
        gen_config = GenerationConfig(
            do_sample=False, max_new_tokens=s.default_max_tokens,
            eos_token_id=sorted(self._eos) or None, pad_token_id=self.tokenizer.pad_token_id,
        )
        cpu = device == "cpu"
        cb_config = ContinuousBatchingConfig(
            page_size=s.page_size,
            num_blocks=s.cpu_num_blocks(self.max_model_len) if cpu or s.num_blocks else None,
            max_batch_tokens=s.max_batch_tokens or (512 if cpu else None),
            max_requests_per_batch=s.max_batch_size,
            max_memory_percent=None if cpu else 0.8,  # headroom for the sampler's vocab-sized temporaries
            allow_block_sharing=False,
        )
        with torch.no_grad():
            self.manager = self.model.init_continuous_batching(
                generation_config=gen_config, continuous_batching_config=cb_config
            )
        self.sampler = sampling.install(self.manager, self._eos)
        self.manager.start()
        self._activate(self.default_model)

    # --- adapters ---

    def _activate(self, model: str) -> None:
        """Make `model`'s weights the ones CB runs (blocking; the caller guarantees nothing is in flight)."""
        if self._peft is None:
            return

        def switch():
            lora = self._peft.base_model
            if model == self.base_name:
                lora.disable_adapter_layers()
            else:
                lora.enable_adapter_layers()
                self._peft.set_adapter(model)

        if self.manager is not None and self.manager.is_running():
            with self.manager.pause():
                switch()
        else:
            switch()
        log.debug("active model: %s", model)

    async def load_adapter(self, name: str, path: str) -> None:
        from peft import PeftModel

        if name in (self.base_name, COMBINED_ADAPTER) or name in self._adapters:
            raise BadRequest(f"lora_name: a model named {name!r} is already served", param="lora_name")
        if path.startswith("oci://"):
            try:
                from runtime.adapters import oci
            except ImportError:
                raise NotImplementedInBackend("lora_path: oci:// adapters need runtime.adapters.oci, which is not "
                                              "installed", param="lora_path") from None
            import tempfile

            dest = Path(tempfile.mkdtemp(prefix=f"adapter-{name}-"))
            try:
                local = Path(await asyncio.to_thread(oci.pull, path, dest))
            except Exception as err:  # registry, auth or digest errors: the caller's reference is at fault
                shutil.rmtree(dest, ignore_errors=True)
                raise BadRequest(f"lora_path: pulling {path} failed: {err}", param="lora_path") from None
        else:
            dest, local = None, Path(path)
        try:
            check_adapter_folder(local)
        except AdapterFolderError as err:
            if dest is not None:
                shutil.rmtree(dest, ignore_errors=True)
            raise BadRequest(f"lora_path: {err}", param="lora_path") from None

        def load():
            with self.manager.pause():
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(self.model, str(local), adapter_name=name,
                                                           is_trainable=False)
                    self._peft.base_model.disable_adapter_layers()  # the base stays the active model
                else:
                    try:
                        self._peft.load_adapter(str(local), adapter_name=name, is_trainable=False)
                    except Exception:
                        if name in self._peft.peft_config:  # half-added: take it out again
                            self._peft.delete_adapter(name)
                        raise
                    finally:
                        # load_adapter may change the active adapter; restore what is running.
                        current = self._scheduler.current if self._scheduler else self.default_model
                        if current != self.base_name and current in self._peft.peft_config:
                            self._peft.set_adapter(current)

        async with self._lock():
            try:
                await asyncio.to_thread(load)
            except Exception as err:  # the folder passed the checks, but does not fit this model (shapes, modules)
                if dest is not None:
                    shutil.rmtree(dest, ignore_errors=True)
                raise BadRequest(f"lora_path: the adapter in {path} cannot be loaded into {self.base_name}: "
                                 f"{type(err).__name__}: {err}", param="lora_path") from None
            self._adapters[name] = str(path)
            if dest is not None:
                self._pulled[name] = dest
        log.info("hot-loaded adapter %s from %s", name, path)

    async def unload_adapter(self, name: str) -> None:
        if name not in self._adapters:
            raise ModelNotFound(f"lora_name: no adapter named {name!r} is loaded", param="lora_name",
                                code="model_not_found")
        scheduler = self._get_scheduler()
        # Take the adapter's turn so nothing runs on it while it is deleted.
        await scheduler.acquire(self.base_name)
        try:
            async with self._lock():
                def delete():
                    with self.manager.pause():
                        self._peft.delete_adapter(name)
                        self._peft.base_model.disable_adapter_layers()

                await asyncio.to_thread(delete)
                del self._adapters[name]
                if name in self._pulled:
                    shutil.rmtree(self._pulled.pop(name), ignore_errors=True)
                if self.default_model == name:
                    self.default_model = self.base_name
        finally:
            await scheduler.release()
        log.info("unloaded adapter %s", name)

    def _lock(self) -> asyncio.Lock:
        if self._adapter_lock is None:
            self._adapter_lock = asyncio.Lock()
        return self._adapter_lock

    def _get_scheduler(self) -> AdapterScheduler:
        if self._scheduler is None:
            self._scheduler = AdapterScheduler(self._activate, self.default_model)
        return self._scheduler

    # --- the protocol ---

    def ready(self) -> bool:
        return self._ready and self.manager is not None and self.failure() is None

    def failure(self) -> str | None:
        error = self.manager.background_thread_status.fatal_error if self.manager is not None else None
        return None if error is None else f"the generation loop stopped: {type(error).__name__}: {error}"

    def models(self) -> list[ModelCard]:
        cards = [ModelCard(self.base_name, None, self.model_root)]
        cards += [ModelCard(name, self.base_name, src) for name, src in self._adapters.items()]
        return cards

    def resolve_model(self, name: str | None) -> str:
        if name is None or name == "":
            return self.default_model
        if name == self.base_name or name in self._adapters:
            return name
        known = ", ".join(c.id for c in self.models())
        raise ModelNotFound(f"model {name!r} does not exist; served models: {known}", param="model",
                            code="model_not_found")

    def _require_ready(self) -> None:
        # Requests can arrive while the model is still loading: answer 503 (like /health), not a 500.
        if not self.ready():
            raise ServiceUnavailable("the model is still loading (or the engine stopped); retry when /health is 200")

    def encode_prompt(self, prompt: str) -> list[int]:
        self._require_ready()
        return list(self.tokenizer(prompt)["input_ids"])

    def encode_chat(self, messages: list[dict]) -> list[int]:
        self._require_ready()
        if not self.tokenizer.chat_template:
            raise BadRequest("messages: this model has no chat template; send `prompt` to /v1/completions",
                             param="messages")
        return chat_prompt_ids(self.tokenizer, messages)

    def decode(self, token_ids: Sequence[int], clean_up_tokenization_spaces: bool = False) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True,
                                     clean_up_tokenization_spaces=clean_up_tokenization_spaces)

    def stats(self) -> EngineStats:
        running = sum(1 for started in self._inflight.values() if started)
        waiting = len(self._inflight) - running + (self._scheduler.waiting if self._scheduler else 0)
        return EngineStats(running=running, waiting=waiting)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        from tokenizers.decoders import DecodeStream

        from runtime.inference.backends import sampling

        if not self.ready():
            raise ServiceUnavailable("the model is not loaded (or the engine stopped)")
        scheduler = self._get_scheduler()
        rid = request.request_id or uuid.uuid4().hex
        await scheduler.acquire(request.model)
        if not self.ready():  # the engine stopped while this request waited for its model's turn
            await scheduler.release()
            raise ServiceUnavailable("the engine stopped; the server is restarting")
        self._inflight[rid] = False
        queue: asyncio.Queue = asyncio.Queue()
        finished = False
        slot = None
        try:
            self.manager.register_result_handler(rid, queue.put_nowait)
            p = request.params
            kwargs = {}
            if p.temperature > 0:
                slot = self.sampler.register(p.temperature, p.top_k, p.top_p, p.seed)
                kwargs[sampling.SLOT_KWARG] = slot
            minimum = p.max_tokens if p.ignore_eos else p.min_tokens
            if minimum > 0:
                kwargs[sampling.MIN_NEW_TOKENS_KWARG] = minimum
            self.manager.add_request(list(request.prompt_ids), request_id=rid, max_new_tokens=p.max_tokens,
                                     streaming=True, **kwargs)
            decoder = DecodeStream([], skip_special_tokens=True)
            rust = self.tokenizer._tokenizer
            seen = 0
            while True:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation (the client left)
                    # that arrives as a token does, and the request would then run to its end.
                    async with asyncio.timeout(ENGINE_CHECK_S):
                        output = await queue.get()
                except TimeoutError:
                    # CB fails the requests it holds when its loop dies; this catches any it did not reach.
                    if self.failure() is not None:
                        raise ServiceUnavailable(f"generation failed: {self.failure()}") from None
                    continue
                if output.error is not None:
                    raise ServiceUnavailable(f"generation failed: {output.error}")
                self._inflight[rid] = True
                new = list(output.generated_tokens[seen:])
                seen = len(output.generated_tokens)
                text = "".join(piece for t in new if (piece := decoder.step(rust, t)) is not None)
                reason = None
                if output.is_finished():
                    finished = True
                    reason = "stop" if output.generated_tokens and output.generated_tokens[-1] in self._eos else "length"
                yield Delta(new, text, reason)
                if finished:
                    return
        finally:
            if not finished:
                self.manager.cancel_request(rid)
                with self.manager.output_router._lock:
                    self.manager.output_router.result_handlers.pop(rid, None)
            if slot is not None:
                self.sampler.forget(slot)
            self._inflight.pop(rid, None)
            await scheduler.release()

    def close(self) -> None:
        if self.manager is not None:
            self.manager.stop(block=True, timeout=5)
            self.manager = None
        self._ready = False


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    return ids
