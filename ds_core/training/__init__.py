"""The shipped conditions: training recipes, the SFT and GRPO trainers, the stages that build checkpoints/."""
