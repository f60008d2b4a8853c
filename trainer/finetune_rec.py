"""``python -m trainer.finetune_rec``: the REC fine-tuning command line (the task lives in :mod:`trainer.tasks.rec`)."""
from trainer.tasks.rec.run import main

if __name__ == "__main__":
    main()
