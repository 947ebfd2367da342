"""LoRA fine-tuning: datasets, training, evaluation gate, adapter registry.

Submodules are imported where they are used (`briefing.tuning.train` pulls in torch and peft);
this package itself stays light, because `Settings` reads `briefing.tuning.config`.

- `config`: TrainConfig, TuneConfig (TUNE_* settings)
- `data`, `sources`: versioned dataset snapshots from editor decisions, self-training and references
- `train`: peft LoRA SFT and DPO with checkpoints
- `layouts`: one joint adapter, or a set with a part per language (which rows each part trains on)
- `gguf_lora`: a peft adapter as a GGUF LoRA for llama.cpp
- `evaluate`: the gate (metrics, paired bootstrap, decision)
- `registry`, `serving`: adapters' records and states, and loading the promoted one
- `pipeline`: the tune loop (snapshot → train → gate → promote or keep)
"""
