"""Preference and RL methods, run through trl: reward models, online RL (GRPO/RLOO), and the
direct preference family (DPO, KTO, ORPO), one module each. base.py is what they share; the
modules starting with `_` are the trl glue (trainer set-up, models, rewards), imported lazily."""
