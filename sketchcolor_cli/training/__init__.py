"""Fine-tuning the diffusion models on a studio's own finished cuts.

* `dataset`: finished cuts -> a sharded training set (WebDataset-style tar shards + a versioned
  JSON manifest) and its check. No torch.
* `data`: the shards as a torch dataset, and the deterministic bucket batch sampler that a
  resumed run picks up exactly where it stopped.
* `recipe`: the validated training recipe (``sketchcolor train CONFIG.yaml``). No torch.
* `gram`: the Gram regularization of the dual-branch training (forward hooks, the loss).
* `lora`: plain low-rank adapters for the LoRA-only variant, and the safetensors files the
  training writes (LoRA or trained weights) with their loader / merger.
* `switch`: the switch model's training step (fg/bg LoRAs, threshold embedder, ClusterTransformer).
* `xl`: the xl/xlv2 models' training step (UNet + sketch encoder + projection, or LoRA; the dual
  branch with the Gram term as published).
* `loop`: the training loop with Hugging Face ``accelerate``.
"""
