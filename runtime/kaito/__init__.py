"""Kaito's pod contract: the fixed facts of the pods Kaito runs (and our controller renders), written once.

Ports, mount paths, file names and probe paths that the controller writes into pod specs and the runtimes read
inside them. Everything else imports these; nothing re-types them. Importable without torch or any other part
of the runtime (the operator's image has neither). Submodules hold the contract's rules: `adapters` (what an
adapter folder holds), `templates` (a chat template given as a file or inline), `configs` (Kaito's default
training and inference configs).
"""

# --- ports ---
INFERENCE_PORT = 5000
"""The server's port in every inference pod (the Service maps port 80 to it); the trainer's metrics port too."""
RAY_PORT = 6379
"""The Ray head's port on pod 0 of a multi-node StatefulSet."""

# --- mounts ---
MOUNT_ROOT = "/mnt"
"""Everything a pod mounts for the runtime lives under here; tuning outputs from a config file must stay under it."""
ADAPTERS_DIR = "/mnt/adapter"
"""One sub-folder per LoRA adapter (`/mnt/adapter/<name>/`), filled by the adapter-pull init containers."""
CONFIG_DIR = "/mnt/config"
"""The Workspace's ConfigMap (inference or training config)."""
DATA_DIR = "/mnt/data"
"""Tuning input: downloaded URLs, a dataset image's /data, or the input volume."""
RESULTS_DIR = "/mnt/results"
"""Tuning output: checkpoints, the adapter, the sentinel; the pusher sidecar reads it."""
WEIGHTS_DIR = "/workspace/weights"
"""Base weights: baked into preset images, or pulled there by Kaito's weights-downloader init container."""
KAITO_TRAINER_WEIGHTS_DIR = "/workspace/tfs/weights"
"""Where Kaito's own trainer image keeps the weights (its ModelConfig default); accepted in training configs."""
WEIGHTS_CACHE_DIR = "/workspace/cache"
"""HF_HOME of gated presets, which download their weights at start into a sized emptyDir mounted here."""

# --- files ---
INFERENCE_CONFIG_KEY = "inference_config.yaml"
TRAINING_CONFIG_KEY = "training_config.yaml"
INFERENCE_CONFIG_PATH = f"{CONFIG_DIR}/{INFERENCE_CONFIG_KEY}"
TRAINING_CONFIG_PATH = f"{CONFIG_DIR}/{TRAINING_CONFIG_KEY}"
TRAIN_LOG_FILE = "train_log.jsonl"
"""The trainer's events, one JSON object a line, in the results folder (and on its stdout): progress, resumes."""
SENTINEL = "fine_tuning_completed.txt"
"""Written into the results folder last, once the adapter is complete; the pusher sidecar waits for it."""
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""What an adapter folder (and an adapter image's /data) holds."""
ADAPTER_IMAGE_DATA_DIR = "data"
"""The folder of an adapter image's filesystem that holds ADAPTER_FILES (Kaito's layout)."""

# --- probes (the server answers them; the pod specs name them) ---
HEALTH_PATH = "/health"
"""Kaito's probe: 200 once the model is loaded and the engine runs, else 503."""
LIVE_PATH = "/v1/health/live"
"""The process answers and its engine has not stopped (200 while the model loads), as NIM names it: liveness."""
READY_PATH = "/v1/health/ready"
"""The engine takes work now (what /health says): start-up and readiness."""
