"""``python -m trainer.experiment``: the data-efficiency grid's command line (:mod:`trainer.experiment.cli`)."""
from trainer.experiment.cli import main

if __name__ == "__main__":
    main()
