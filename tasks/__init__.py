"""Package data (installed as ``editprobe.tasks``): benchmark tasks, topics, paraphrase schemes, prompts, editor
presets and diagnostics, all YAML. Read through :mod:`editprobe.resources`; there is no code here."""
