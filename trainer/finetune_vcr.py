"""``python -m trainer.finetune_vcr``: the VCR fine-tuning command line (the task lives in :mod:`trainer.tasks.vcr`)."""
from trainer.tasks.vcr.run import main

if __name__ == "__main__":
    main()
