"""``python -m textenv.reward_model``: the command line of ``textenv.reward_model.cli``."""

from textenv.reward_model.cli import main

if __name__ == "__main__":
    main()
