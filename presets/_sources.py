"""Where preset numbers come from: the source strings that family modules cite in `Preset.sources`."""

SUPPORTED_MODELS = "kaito-project/kaito presets/workspace/models/supported_models.yaml (version: commit URL)"
MODEL_CATALOG = "kaito-project/kaito presets/workspace/models/model_catalog.yaml"
# Newer entries of supported_models.yaml are missing from the stored upstream copy; two forks carry them.
SUPPORTED_MODELS_NEWER = ("Kaito supported_models.yaml `version:` commit URL, read from the forks "
                          "Jont828/kaito@ab2545e and ani1797/kaito-base-rocm@5ea3f96 (newer than the stored upstream)")
KAITO_TABLE = "kaito-reference.md §1.3 (Kaito v0.6.2 GPU/tuning columns, v0.10.0 SafeT/BPT/TokLim/Disk/Ready)"
