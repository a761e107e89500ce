"""GPU sizing: the instance catalogue (catalog), inference and tuning memory plans (plan), presets from
Hugging Face configs (generate) and the `kaito presets` / `kaito plan` commands (cli). Pure Python, no torch."""
