"""``python -m trainer.finetune_nlvr2``: the NLVR2 fine-tuning command line (the task lives in :mod:`trainer.tasks.nlvr2`)."""
from trainer.tasks.nlvr2.run import main

if __name__ == "__main__":
    main()
