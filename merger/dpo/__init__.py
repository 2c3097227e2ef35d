"""The DPO stage: preference data checked and decontaminated, trained with trl, merged back."""
