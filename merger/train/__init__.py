"""The training stage: continued pretraining, SFT (with distillation) and DPO on trl, one file per trainer; the data
checked and decontaminated, LoRA (or the layers chosen) trained, merged back into a plain model folder."""
