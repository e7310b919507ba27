"""Config templates (``stage1.yaml``, ``stage2.yaml``) and DeepSpeed/accelerate configs, as package data."""
