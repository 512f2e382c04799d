"""Methods that peft implements: LoRA (DoRA, rsLoRA) and IA3. base.py holds what they share."""
