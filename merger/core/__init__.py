"""What every stage stands on: user errors, atomic writes, Hugging Face folder facts, devices, logs."""
