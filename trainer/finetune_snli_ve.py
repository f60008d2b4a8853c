"""``python -m trainer.finetune_snli_ve``: the SNLI-VE fine-tuning command line (the task lives in :mod:`trainer.tasks.snli_ve`)."""
from trainer.tasks.snli_ve.run import main

if __name__ == "__main__":
    main()
